"""Train the small RWKV-7 the site ships as its default model (CPU, PyTorch; a dev-only tool).

    python -m build.train                     # ~40 min on 2 cores; writes models/rwkv7-tiny-wordnet.*
    python -m build.train --steps 50 --out /tmp/try   # a quick look

Data: the glosses and example sentences of WordNet 3.0 (Debian package `wordnet-base`,
/usr/share/wordnet/data.{noun,verb,adj,adv}; WordNet 3.0 licence: use, copy, modify and
distribute for any purpose, with its copyright notice), one dictionary entry per line:
    garden (noun): a plot of ground where plants are cultivated; "the garden was full of flowers"
Tokens: the 256 byte values. A byte vocabulary keeps the embedding and head tiny (a World
subset would spend most of a few-million-parameter budget on 65536-row tables) and needs no
tokenizer file: the safetensors metadata says `rwkvweb.tokenizer: bytes`.

The model is RWKV-7 in its parallel-over-batch, loop-over-time training form, the same maths
as py/rwkvweb/reference.py with the official tensor names and shapes, so the result is an
ordinary RWKV-7 checkpoint. Before writing, the script checks its own logits against the numpy
reference on the exported (fp16) weights.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "py"))

from rwkvweb.config import DECAY_SCALE, GN_EPS, LN_EPS, ModelConfig, tensor_shapes  # noqa: E402
from rwkvweb.reference import RWKV7  # noqa: E402
from rwkvweb.safetensors import write_safetensors  # noqa: E402

WORDNET = "/usr/share/wordnet"
PARTS_OF_SPEECH = {"noun": "noun", "verb": "verb", "adj": "adjective", "adv": "adverb"}
NAME = "rwkv7-tiny-wordnet"


# --- data ---------------------------------------------------------------------------------


def wordnet_text(folder: str = WORDNET) -> str:
    """One line per synset: `lemma (part of speech): gloss`, in the files' order."""
    lines = []
    for pos, label in PARTS_OF_SPEECH.items():
        with open(os.path.join(folder, f"data.{pos}"), encoding="latin-1") as file:
            for line in file:
                if line.startswith("  ") or " | " not in line:  # the licence header
                    continue
                fields, gloss = line.split(" | ", 1)
                lemma = fields.split()[4].replace("_", " ")
                lemma = lemma.split("(")[0]  # adjective markers like good(a)
                lines.append(f"{lemma} ({label}): {gloss.strip()}")
    return "\n".join(lines) + "\n"


def batches(data: np.ndarray, batch: int, context: int, rng: np.random.Generator):
    while True:
        starts = rng.integers(0, len(data) - context - 1, batch)
        chunk = np.stack([data[s : s + context + 1] for s in starts]).astype(np.int64)
        yield torch.from_numpy(chunk[:, :-1]), torch.from_numpy(chunk[:, 1:])


# --- the model: RWKV-7, training form -------------------------------------------------------


class TimeMix(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        C, H, N = cfg.n_embd, cfg.n_head, cfg.head_size
        self.cfg, self.layer = cfg, layer
        shapes = {
            k.split("att.", 1)[1]: v
            for k, v in tensor_shapes(cfg).items()
            if k.startswith(f"blocks.{layer}.att.") and "." not in k.split("att.", 1)[1]
        }
        for name, shape in shapes.items():
            setattr(self, name, nn.Parameter(torch.zeros(shape)))
        self.receptance, self.key, self.value, self.output = (nn.Linear(C, C, bias=False) for _ in range(4))
        self.ln_x = nn.GroupNorm(H, C, eps=GN_EPS)
        self._init(C, N)

    def _init(self, C: int, N: int) -> None:
        """RWKV-LM's v7 initialisation, simplified: decays spread over channels, LoRAs starting at zero."""
        L, layer = self.cfg.n_layer, self.layer
        to_one, to_zero = layer / max(1, L - 1), 1 - layer / L
        ddd = torch.arange(C).float().view(1, 1, C) / C
        with torch.no_grad():
            for name, power in (("x_r", 0.2), ("x_w", 0.9), ("x_k", 0.7), ("x_v", 0.7), ("x_a", 0.9), ("x_g", 0.2)):
                getattr(self, name).copy_(1 - ddd ** (power * to_zero))
            n = torch.arange(C).float()
            self.w0.copy_((-7 + 5 * (n / (C - 1)) ** (0.85 + to_one**0.5) + 0.5).view(1, 1, C))
            self.v0.fill_(1.0)
            self.k_k.fill_(0.85)
            self.k_a.fill_(1.0)
            for name in ("w2", "a2", "v2", "g2"):
                nn.init.orthogonal_(getattr(self, name), gain=0.1)
            bound = 1 / math.sqrt(C)
            nn.init.uniform_(self.receptance.weight, -0.5 * bound, 0.5 * bound)
            nn.init.uniform_(self.key.weight, -0.05 * bound, 0.05 * bound)
            nn.init.uniform_(self.value.weight, -0.5 * bound, 0.5 * bound)
            self.output.weight.zero_()
            self.ln_x.weight.fill_(((1 + layer) / L) ** 0.7)

    def forward(self, x, v_first):  # x: [B, T, C] after ln1
        B, T, C = x.shape
        H, N = self.cfg.n_head, self.cfg.head_size
        dx = F.pad(x, (0, 0, 1, -1)) - x  # previous token minus this one (zero before the first)
        xr, xw, xk, xv, xa, xg = (x + dx * getattr(self, m) for m in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"))
        r, k, v = self.receptance(xr), self.key(xk), self.value(xv)
        w = self.w0 + torch.tanh(xw @ self.w1) @ self.w2
        a = torch.sigmoid(self.a0 + (xa @ self.a1) @ self.a2)
        g = torch.sigmoid(xg @ self.g1) @ self.g2
        kk = F.normalize((k * self.k_k).view(B, T, H, N), dim=-1, p=2.0, eps=1e-12).view(B, T, C)
        k = k * (1 + (a - 1) * self.k_a)
        if self.layer == 0:
            v_first = v
        else:
            v = v + (v_first - v) * torch.sigmoid(self.v0 + (xv @ self.v1) @ self.v2)
        w = torch.exp(-DECAY_SCALE * torch.sigmoid(w))

        heads = lambda t: t.view(B, T, H, N)  # noqa: E731
        r_, w_, k_, v_, kk_, a_ = map(heads, (r, w, k, v, kk, a))
        # Everything that does not depend on S is computed for all t at once; the loop keeps
        # only S_t = S_{t-1}·diag(w_t) + (S_{t-1}·(−kk_t))·(kk_t ⊙ a_t)ᵀ + v_t·k_tᵀ   (S[value, key]).
        decay, minus_kk, kk_a = w_.unsqueeze(-2), (-kk_).unsqueeze(-1), (kk_ * a_).unsqueeze(-2)
        values, keys, receptance = v_.unsqueeze(-1), k_.unsqueeze(-2), r_.unsqueeze(-1)
        S = x.new_zeros(B, H, N, N)
        ys = []
        for t in range(T):
            S = S * decay[:, t] + (S @ minus_kk[:, t]) @ kk_a[:, t] + values[:, t] @ keys[:, t]
            ys.append(S @ receptance[:, t])  # y_t = S_t · r_t
        ys = torch.stack(ys, dim=1)
        y = ys.reshape(B * T, C)
        y = self.ln_x(y).view(B, T, C)
        y = y + ((r_ * k_ * self.r_k).sum(-1, keepdim=True) * v_).view(B, T, C)
        return self.output(y * g), v_first


class ChannelMix(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        C, L = cfg.n_embd, cfg.n_layer
        self.x_k = nn.Parameter(1 - (torch.arange(C).float().view(1, 1, C) / C) ** ((1 - layer / L) ** 4))
        self.key, self.value = nn.Linear(C, cfg.dim_ffn, bias=False), nn.Linear(cfg.dim_ffn, C, bias=False)
        nn.init.uniform_(self.key.weight, -0.5 / math.sqrt(C), 0.5 / math.sqrt(C))
        nn.init.zeros_(self.value.weight)

    def forward(self, x):
        dx = F.pad(x, (0, 0, 1, -1)) - x
        return self.value(torch.relu(self.key(x + dx * self.x_k)) ** 2)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        if layer == 0:
            self.ln0 = nn.LayerNorm(cfg.n_embd, eps=LN_EPS)
        self.ln1, self.ln2 = nn.LayerNorm(cfg.n_embd, eps=LN_EPS), nn.LayerNorm(cfg.n_embd, eps=LN_EPS)
        self.att, self.ffn = TimeMix(cfg, layer), ChannelMix(cfg, layer)

    def forward(self, x, v_first):
        dx, v_first = self.att(self.ln1(x), v_first)
        x = x + dx
        return x + self.ffn(self.ln2(x)), v_first


class RWKV7Train(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        nn.init.uniform_(self.emb.weight, -1e-4, 1e-4)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.ln_out = nn.LayerNorm(cfg.n_embd, eps=LN_EPS)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        nn.init.orthogonal_(self.head.weight, gain=0.5)

    def forward(self, idx):  # [B, T] -> logits [B, T, V]
        x = self.blocks[0].ln0(self.emb(idx))
        v_first = None
        for block in self.blocks:
            x, v_first = block(x, v_first)
        return self.head(self.ln_out(x))


# --- training -------------------------------------------------------------------------------


def learning_rate(step: int, steps: int, peak: float, warmup: int = 100, floor: float = 0.05) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def train(args) -> None:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    text = wordnet_text()
    data = np.frombuffer(text.encode("utf-8"), np.uint8)
    split = int(len(data) * 0.98)
    train_data, held_out = data[:split], data[split:]
    cfg = ModelConfig.default_for(args.layers, args.width, 256)
    model = RWKV7Train(cfg)
    params = sum(p.numel() for p in model.parameters())
    matrices = [p for n, p in model.named_parameters() if p.ndim == 2 and "emb" not in n]
    others = [p for n, p in model.named_parameters() if not (p.ndim == 2 and "emb" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": matrices, "weight_decay": 0.01}, {"params": others, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.99),
        eps=1e-8,
    )
    os.makedirs(args.out, exist_ok=True)
    log_path = os.path.join(args.out, f"{NAME}.log.txt")
    log = open(log_path, "w")
    say = lambda line: (print(line, flush=True), log.write(line + "\n"), log.flush())  # noqa: E731
    say(
        f"data: {len(data):,} bytes of WordNet glosses ({len(train_data):,} train / {len(held_out):,} held out); "
        f"model: {cfg}; {params:,} parameters; batch {args.batch} x {args.context} bytes; {args.steps} steps"
    )
    started = time.time()
    stream = batches(train_data, args.batch, args.context, rng)
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr)
        inputs, targets = next(stream)
        loss = F.cross_entropy(model(inputs).reshape(-1, 256), targets.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 25 == 0 or step == args.steps - 1:
            say(
                f"step {step:5d}  loss {loss.item():.4f}  bits/byte {loss.item() / math.log(2):.3f}  "
                f"lr {optimizer.param_groups[0]['lr']:.2e}  {time.time() - started:.0f}s"
            )
    minutes = (time.time() - started) / 60
    held_out_bpb = evaluate(model, held_out, args.context)
    say(f"done in {minutes:.1f} min; held-out bits/byte {held_out_bpb:.3f}")
    export(model, cfg, args, params, minutes, held_out_bpb, len(data), loss.item() / math.log(2))
    log.close()


@torch.no_grad()
def evaluate(model, data: np.ndarray, context: int, batches_: int = 16) -> float:
    rng = np.random.default_rng(0)
    losses = [
        F.cross_entropy(model(i).reshape(-1, 256), t.reshape(-1)).item()
        for i, t in (next(batches(data, 8, context, rng)) for _ in range(batches_))
    ]
    return float(np.mean(losses)) / math.log(2)


# --- export -----------------------------------------------------------------------------------


def export(
    model, cfg: ModelConfig, args, params: int, minutes: float, held_out_bpb: float, data_bytes: int, final_bpb: float
) -> None:
    state = {name: tensor.detach().float().numpy().astype(np.float16) for name, tensor in model.state_dict().items()}
    expected = tensor_shapes(cfg)
    state = {name: state[name] for name in expected if name in state}  # official order
    assert set(state) == set(expected), set(expected) ^ set(state)
    path = os.path.join(args.out, f"{NAME}.st")
    metadata = {
        "rwkvweb.tokenizer": "bytes",
        "version": "x070",
        "name": NAME,
        "license": "WordNet-3.0 (data); Apache-2.0 (weights)",
    }
    write_safetensors(path, state, metadata)
    check_against_reference(model, path)
    card = {
        "name": NAME,
        "architecture": "RWKV-7 (x070)",
        "config": cfg.__dict__,
        "parameters": params,
        "tokenizer": "bytes: token id = byte value (0-255), UTF-8 text",
        "data": {
            "source": "WordNet 3.0 glosses and example sentences, "
            "Debian package wordnet-base (/usr/share/wordnet/data.*)",
            "license": "WordNet 3.0 license (Princeton University): "
            "use, copy, modify, distribute for any purpose with the copyright notice",
            "copyright": "WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved.",
            "bytes": data_bytes,
            "format": "one line per synset: 'lemma (part of speech): gloss'",
        },
        "training": {
            "steps": args.steps,
            "batch": args.batch,
            "context": args.context,
            "peak_lr": args.lr,
            "seed": args.seed,
            "threads": args.threads,
            "minutes": round(minutes, 1),
            "machine": "2-core CPU, PyTorch " + torch.__version__,
            "final_train_bits_per_byte": round(final_bpb, 3),
            "held_out_bits_per_byte": round(held_out_bpb, 3),
        },
        "weights": {"file": f"{NAME}.st", "dtype": "fp16", "license": "Apache-2.0"},
        "log": f"{NAME}.log.txt",
        "example_prompt": "garden (noun): ",
        "command": "python -m build.train " + " ".join(sys.argv[1:]),
    }
    with open(os.path.join(args.out, f"{NAME}.json"), "w") as file:
        json.dump(card, file, indent=1)
        file.write("\n")


def check_against_reference(model, path: str) -> None:
    """The training-form model and the numpy reference agree on the exported fp16 weights."""
    reference = RWKV7.load(path)
    with torch.no_grad():
        for name, p in model.state_dict().items():
            p.copy_(p.half().float())  # compare on exactly the exported values
        tokens = list(b"garden (noun): a plot of ground")
        ours = model(torch.tensor([tokens])).numpy()[0]
    theirs, _ = reference.logits(tokens)
    error = np.abs(ours - theirs).max() / (theirs.max() - theirs.min())
    print(f"training form vs numpy reference: max |dlogit| = {error:.2e} of the range")
    assert error < 1e-3, f"the training model and the reference disagree ({error:.2e})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "models"))
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=192)
    parser.add_argument("--steps", type=int, default=2400)  # the shipped model's run
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    train(parser.parse_args())


if __name__ == "__main__":
    main()
