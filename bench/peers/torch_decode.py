#!/usr/bin/env python3
"""PyTorch peer of bench/transformer-seq/decode-vs-torch.ts: lowbit's Transformer LM rebuilt by
torch_seq.transformer_lm_for (lowbit's state dict loaded with load_state_dict(strict=True)), fp32,
generating greedily with a hand-written KV cache: per block a preallocated key and value buffer
[N, heads, capacity, d]; the prompt is fed at once (causal mask), then one id per step, whose
keys and values are written into the buffers at its position and whose query attends to the
buffers' first past + 1 positions (no mask needed), all under torch.inference_mode().

One JSON object per line in each direction (json_line_peer.py). Requests:

  {"op": "init", "id": "b16", "weights": "<safetensors path>", "prompt": "<raw int32 path>",
   "batch": N, "promptLength": P, "tokens": T, "heads": 4, "activation": "gelu-tanh", "eps": 1e-5,
   "warmup": 1}
      builds the model, loads the weights, runs `warmup` untimed generations; answers {"ok": true}
  {"op": "generate", "id": ..., "out": "<path>"}
      one timed greedy generation of T ids per row; writes the ids [N, T] as raw little-endian
      int32; answers {"ok": true, "ms": wall ms, "cpu_ms": process CPU ms}

Threads: torch.set_num_threads(--threads); run with OPENBLAS_NUM_THREADS=1.
"""
import math
import sys
import time

from json_line_peer import serve, start, threads_argument
from torch_seq import read_safetensors, transformer_lm_for


def make_generator(torch, np, req):
    F = torch.nn.functional
    weights = read_safetensors(np, req["weights"])
    model = transformer_lm_for(torch, weights, req)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    model.eval()
    batch, length, tokens = int(req["batch"]), int(req["promptLength"]), int(req["tokens"])
    heads = int(req.get("heads", 4))
    activation = req.get("activation", "gelu-tanh")
    prompt_ids = np.fromfile(req["prompt"], dtype="<i4")
    if prompt_ids.size != batch * length:
        raise ValueError(f"{req['prompt']}: {prompt_ids.size} ids, expected {batch} x {length}")
    prompt = torch.from_numpy(prompt_ids.astype("int64")).reshape(batch, length)
    embed = model.tokenEmbedding.weight.shape[1]
    capacity = model.positionEmbedding.weight.shape[0]
    if length + tokens - 1 > capacity:
        raise ValueError(f"prompt {length} + {tokens} tokens do not fit the {capacity}-position table")
    d = embed // heads
    scale = 1.0 / math.sqrt(d)

    def act(x):
        if activation == "relu":
            return F.relu(x)
        return F.gelu(x, approximate="tanh" if activation == "gelu-tanh" else "none")

    def step(ids, caches, past):
        """ids [N, S] at positions past..past+S-1 -> logits [N, V] of the last; fills the caches."""
        n, s = ids.shape
        x = model.tokenEmbedding(ids) + model.positionEmbedding(torch.arange(past, past + s))
        mask = torch.full((s, past + s), float("-inf")).triu(past + 1) if s > 1 else None
        for block, (keys, values) in zip(model.blocks, caches):
            q, k, v = block.attn.qkv(block.ln1(x)).split(embed, dim=2)
            q, k, v = (t.reshape(n, s, heads, d).transpose(1, 2) for t in (q, k, v))
            keys[:, :, past:past + s] = k
            values[:, :, past:past + s] = v
            scores = (q @ keys[:, :, :past + s].transpose(-1, -2)) * scale
            if mask is not None:
                scores = scores + mask
            a = torch.softmax(scores, dim=-1)
            x = x + block.attn.proj((a @ values[:, :, :past + s]).transpose(1, 2).reshape(n, s, embed))
            x = x + block.fc2(act(block.fc1(block.ln2(x))))
        return model.head(model.lnFinal(x[:, -1]))

    def generate():
        with torch.inference_mode():
            caches = [(torch.empty(batch, heads, capacity, d), torch.empty(batch, heads, capacity, d)) for _ in model.blocks]
            logits = step(prompt, caches, 0)
            out = []
            for i in range(tokens):
                nxt = logits.argmax(dim=-1)
                out.append(nxt)
                if i == tokens - 1:
                    break
                logits = step(nxt[:, None], caches, length + i)
            return torch.stack(out, dim=1)

    for _ in range(int(req.get("warmup", 1))):
        generate()
    return generate


def main():
    torch = start(threads_argument(__doc__))
    if torch is None:
        return 0
    import numpy as np

    generators = {}

    def init(req):
        generators[req["id"]] = make_generator(torch, np, req)
        return {}

    def generate(req):
        run = generators[req["id"]]
        c0 = time.process_time()
        t0 = time.perf_counter()
        ids = run()
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0
        ids.numpy().astype("<i4").tofile(req["out"])
        return {"ms": wall * 1000, "cpu_ms": cpu * 1000}

    return serve({"init": init, "generate": generate})


if __name__ == "__main__":
    sys.exit(main())
