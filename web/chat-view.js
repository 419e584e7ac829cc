// The conversation view: messages as text nodes (model text never becomes HTML), streamed answers,
// Stop, Regenerate, New chat, save to one file and restore. The transcript, the template and the kept
// recurrent state live in the worker (rwkvweb.chat via rwkvweb.browser); this only renders them.

export function initChat({ engine, $, samplingOptions, showError, setBusy }) {
  const transcript = $("transcript");

  function messageItem(role, text = "") {
    const item = document.createElement("li");
    item.className = "message";
    item.dataset.role = role;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = { user: "You", assistant: "Model", system: "System" }[role] || role;
    const body = document.createElement("div");
    body.className = "text";
    body.textContent = role === "assistant" ? text.trim() : text;
    item.append(who, body);
    transcript.append(item);
    $("chat-empty").hidden = true;
    item.scrollIntoView({ block: "end" });
    return item;
  }

  function render(messages) {
    transcript.replaceChildren();
    for (const m of messages) messageItem(m.role, m.content).dataset.done = "restored";
    $("chat-empty").hidden = messages.length > 0;
  }

  function statsLine(result) {
    return `${result.generated} tokens, ${result.tokens_per_second.toFixed(2)} tokens/s; ` +
      `prompt: ${result.prompt_tokens} new tokens in ${result.prefill_seconds.toFixed(2)} s; stopped by ${result.stopped_by}`;
  }

  // One answer, streamed into a new assistant message; `method` is chatSend or chatRegenerate.
  async function answer(method, params) {
    const item = messageItem("assistant");
    const body = item.querySelector(".text");
    setBusy(true, true);
    try {
      const result = await engine.call(method, { ...params, options: samplingOptions() }, {
        onText: (piece) => body.append(document.createTextNode(piece)),
      });
      body.textContent = result.reply.trim();
      const stats = document.createElement("p");
      stats.className = "stats";
      stats.textContent = statsLine(result);
      item.append(stats);
      item.dataset.done = result.stopped_by;
      item.dataset.promptTokens = String(result.prompt_tokens);
    } catch (error) {
      item.remove();
      showError(error);
    } finally {
      setBusy(false, false);
    }
  }

  async function send() {
    const text = $("chat-input").value;
    if (!text.trim()) return;
    showError(null);
    $("chat-input").value = "";
    messageItem("user", text);
    await answer("chatSend", { text });
  }

  async function reset() {
    const system = $("system-prompt").value.trim();
    const { messages } = await engine.call("chatNew", { template: $("template").value || null, system: system || null });
    render(messages);
  }

  $("send").addEventListener("click", send);
  $("chat-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !$("send").disabled) {
      event.preventDefault();
      send();
    }
  });
  $("chat-stop").addEventListener("click", () => engine.abort());
  $("regenerate").addEventListener("click", async () => {
    const last = transcript.lastElementChild;
    if (last?.dataset.role !== "assistant") return showError("there is no answer to regenerate");
    showError(null);
    last.remove();
    await answer("chatRegenerate", {});
  });
  $("new-chat").addEventListener("click", () => reset().catch(showError));
  $("template").addEventListener("change", () => reset().catch(showError));

  $("save-chat").addEventListener("click", async () => {
    try {
      const data = await engine.call("chatSave");
      const link = document.createElement("a");
      link.href = URL.createObjectURL(new Blob([data], { type: "application/json" }));
      link.download = `conversation-${new Date().toISOString().slice(0, 19).replaceAll(":", "-")}.rwkvchat.json`;
      link.click();
      setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
    } catch (error) {
      showError(error);
    }
  });

  $("restore-chat").addEventListener("change", async () => {
    const file = $("restore-chat").files[0];
    if (!file) return;
    showError(null);
    try {
      const data = await file.arrayBuffer();
      render((await engine.call("chatRestore", { data }, { transfer: [data] })).messages);
      transcript.dataset.restored = file.name;
    } catch (error) {
      showError(error);
    } finally {
      $("restore-chat").value = "";
    }
  });

  return { reset };
}
