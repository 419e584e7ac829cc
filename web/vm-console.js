// The console transport of the bridge protocol, page side (docs/bridge-protocol.md): the VM program
// (rwkvweb-vm, py/rwkvweb/console.py) writes frames as lines `@rwkvweb:<base64>` on its terminal; the
// answers are typed back into it the same way. Other lines are the program's output. Independent of
// CheerpX: `type(code)` is whatever delivers one key code to the VM's terminal.
export const FRAME_PREFIX = "@rwkvweb:";

export class ConsoleLines {
  // onFrame(bytes): a frame from the VM; onText(line): any other output line.
  constructor({ onFrame, onText }) {
    this.onFrame = onFrame;
    this.onText = onText;
    this.pending = "";
  }

  // Bytes the VM wrote to its terminal (latin-1 is exact for base64 lines; text lines are decoded as UTF-8).
  write(bytes) {
    this.pending += Array.from(bytes, (b) => String.fromCharCode(b)).join("");
    let end;
    while ((end = this.pending.indexOf("\n")) >= 0) {
      const line = this.pending.slice(0, end).replace(/\r$/, "");
      this.pending = this.pending.slice(end + 1);
      if (line.startsWith(FRAME_PREFIX)) this.onFrame(base64Bytes(line.slice(FRAME_PREFIX.length)));
      else this.onText(new TextDecoder().decode(Uint8Array.from(line, (c) => c.charCodeAt(0))));
    }
  }
}

// A frame (an ArrayBuffer in the binary form) typed into the VM as one line.
export function typeFrame(type, frame) {
  const line = FRAME_PREFIX + bytesBase64(new Uint8Array(frame)) + "\n";
  for (let i = 0; i < line.length; i++) type(line.charCodeAt(i));
}

function base64Bytes(text) {
  const binary = atob(text);
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

function bytesBase64(bytes) {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}
