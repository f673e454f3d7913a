#!/usr/bin/env python3
"""Long-lived PyTorch peer for lowbit's `seq-inference` bench section, driven over stdin/stdout.

The models are lowbit's next-word language models rebuilt with torch modules whose state_dict
keys are lowbit's own, so that lowbit's weights (a safetensors file written by the section) load
with load_state_dict(strict=True):

  lstm / gru   Embedding(V, E) -> nn.LSTM / nn.GRU(E, H, batch_first) -> h at the last step ->
               Linear(H, V): ids [N, L] -> logits [N, V]   (lowbit nn.NextWordModel)
  transformer  token Embedding(V, E) + position Embedding(C, E) -> pre-LayerNorm blocks
               x += proj(attn(ln1(x))), x += fc2(gelu(fc1(ln2(x)))) with a fused qkv Linear(E, 3E),
               causal softmax(Q K^T / sqrt(d)) V per head -> lnFinal -> head Linear(E, V) at every
               position: ids [N, L] -> logits [N, L, V]   (lowbit nn.TransformerLM.forwardAll)

"int8" = torch.quantization.quantize_dynamic(model, {nn.LSTM, nn.GRU, nn.Linear}, dtype=qint8):
int8 weights, activations quantized on the fly per call; the embeddings, LayerNorms and attention
matmuls stay float.

One JSON object per line in each direction. On start it prints {"ready": true, "torch", "blas",
"threads", "engine" (the quantized engine in use), "engines" (those this build has)} or {"skipped": "<reason>"} (torch cannot be imported) and exits 0. Requests:

  {"op": "init", "id": "lstm/torch-int8", "kind": "lstm" | "gru" | "transformer",
   "weights": "<safetensors path>", "ids": "<raw little-endian int32 path>", "batch": N, "seq": L,
   "int8": false, "warmup": 3, "heads": 4, "activation": "gelu-tanh" | "gelu" | "relu", "eps": 1e-5}
      builds the model, loads the weights (strict), eval(), quantizes with "int8", runs `warmup`
      untimed forwards; answers {"ok": true}
  {"op": "logits", "id": ..., "out": "<path>"}
      writes the logits of the ids as raw little-endian float32; answers {"ok": true, "shape": [...]}
  {"op": "repeat", "id": ..., "seconds": s}
      runs forwards under torch.inference_mode() until s seconds have passed (at least one);
      answers {"ok": true, "calls": n, "ms": wall ms per call, "cpu_ms": process CPU ms per call}

Errors answer {"error": "<message>"}. End of input ends the process.
Threads: torch.set_num_threads(--threads); run with OPENBLAS_NUM_THREADS=1.
"""
import json
import math
import struct
import sys
import time

from json_line_peer import serve, start, threads_argument

SAFETENSORS_DTYPES = {"F32": "<f4", "F64": "<f8", "I32": "<i4"}
MAX_HEADER = 100 * 1024 * 1024


def read_safetensors(np, path):
    """name -> numpy array of a safetensors file (F32 / F64 / I32), every offset checked."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: shorter than a safetensors header")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER or 8 + n > len(data):
        raise ValueError(f"{path}: header length {n} out of range")
    header = json.loads(data[8:8 + n].decode("utf-8"))
    body = memoryview(data)[8 + n:]
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = SAFETENSORS_DTYPES.get(entry.get("dtype"))
        if dtype is None:
            raise ValueError(f"{path}: tensor {name}: dtype {entry.get('dtype')!r} not supported")
        shape = [int(d) for d in entry["shape"]]
        begin, end = (int(v) for v in entry["data_offsets"])
        count = math.prod(shape)
        if not (0 <= begin <= end <= len(body)) or end - begin != count * np.dtype(dtype).itemsize:
            raise ValueError(f"{path}: tensor {name}: offsets [{begin}, {end}) do not fit shape {shape}")
        out[name] = np.frombuffer(body[begin:end], dtype=dtype).reshape(shape).copy()
    return out


def build_rnn_lm(torch, kind, vocab, embed, hidden):
    nn = torch.nn

    class NextWordModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(vocab, embed)
            self.rnn = (nn.LSTM if kind == "lstm" else nn.GRU)(embed, hidden, batch_first=True)
            self.head = nn.Linear(hidden, vocab)

        def forward(self, ids):
            out, _ = self.rnn(self.embedding(ids))
            return self.head(out[:, -1])

    return NextWordModel()


def transformer_lm_for(torch, weights, req):
    """The Transformer LM whose sizes lowbit's state dict `weights` implies (heads, activation and
    LayerNorm eps from the request), not yet loaded."""
    vocab, embed = weights["tokenEmbedding.weight"].shape
    context = weights["positionEmbedding.weight"].shape[0]
    mlp = weights["blocks.0.fc1.weight"].shape[0]
    layers = len({k.split(".")[1] for k in weights if k.startswith("blocks.")})
    return build_transformer_lm(torch, vocab, context, embed, mlp, layers, int(req.get("heads", 4)),
                                req.get("activation", "gelu-tanh"), float(req.get("eps", 1e-5)))


def build_transformer_lm(torch, vocab, context, embed, mlp, layers, heads, activation, eps):
    nn = torch.nn
    F = torch.nn.functional
    if embed % heads != 0:
        raise ValueError(f"embed {embed} is not divisible by heads {heads}")
    if activation not in ("gelu", "gelu-tanh", "relu"):
        raise ValueError(f"activation {activation!r}")

    def act(x):
        if activation == "relu":
            return F.relu(x)
        return F.gelu(x, approximate="tanh" if activation == "gelu-tanh" else "none")

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(embed, 3 * embed)
            self.proj = nn.Linear(embed, embed)

        def forward(self, x, mask):
            n, length, e = x.shape
            d = e // heads
            q, k, v = self.qkv(x).split(e, dim=2)
            q, k, v = (t.reshape(n, length, heads, d).transpose(1, 2) for t in (q, k, v))
            a = torch.softmax(q @ k.transpose(-1, -2) * (1.0 / math.sqrt(d)) + mask, dim=-1)
            return self.proj((a @ v).transpose(1, 2).reshape(n, length, e))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1 = nn.LayerNorm(embed, eps=eps)
            self.attn = Attention()
            self.ln2 = nn.LayerNorm(embed, eps=eps)
            self.fc1 = nn.Linear(embed, mlp)
            self.fc2 = nn.Linear(mlp, embed)

        def forward(self, x, mask):
            x = x + self.attn(self.ln1(x), mask)
            return x + self.fc2(act(self.fc1(self.ln2(x))))

    class TransformerLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.tokenEmbedding = nn.Embedding(vocab, embed)
            self.positionEmbedding = nn.Embedding(context, embed)
            self.blocks = nn.ModuleList([Block() for _ in range(layers)])
            self.lnFinal = nn.LayerNorm(embed, eps=eps)
            self.head = nn.Linear(embed, vocab)

        def forward(self, ids):
            length = ids.shape[1]
            mask = torch.full((length, length), float("-inf")).triu(1)
            x = self.tokenEmbedding(ids) + self.positionEmbedding(torch.arange(length))
            for block in self.blocks:
                x = block(x, mask)
            return self.head(self.lnFinal(x))

    return TransformerLM()


def make_runner(torch, np, req):
    kind = req["kind"]
    batch, seq = int(req["batch"]), int(req["seq"])
    if kind not in ("lstm", "gru", "transformer"):
        raise ValueError(f"kind must be lstm, gru or transformer, got {kind!r}")
    weights = read_safetensors(np, req["weights"])
    ids = np.fromfile(req["ids"], dtype="<i4")
    if ids.size != batch * seq:
        raise ValueError(f"{req['ids']}: {ids.size} ids, expected {batch} x {seq}")
    if kind == "transformer":
        model = transformer_lm_for(torch, weights, req)
    else:
        vocab, embed = weights["embedding.weight"].shape
        hidden = weights["rnn.weight_hh_l0"].shape[1]
        model = build_rnn_lm(torch, kind, vocab, embed, hidden)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    model.eval()
    if req.get("int8"):
        model = torch.quantization.quantize_dynamic(model, {torch.nn.LSTM, torch.nn.GRU, torch.nn.Linear}, dtype=torch.qint8)
    x = torch.from_numpy(ids.astype("int64")).reshape(batch, seq)

    def forward():
        with torch.inference_mode():
            return model(x)

    for _ in range(int(req.get("warmup", 3))):
        forward()
    return forward


def main():
    torch = start(threads_argument(__doc__), lambda torch: {
        "engine": torch.backends.quantized.engine,
        "engines": [e for e in torch.backends.quantized.supported_engines if e != "none"]})
    if torch is None:
        return 0
    import numpy as np

    runners = {}

    def init(req):
        runners[req["id"]] = make_runner(torch, np, req)
        return {}

    def logits(req):
        y = runners[req["id"]]()
        y.contiguous().numpy().astype("<f4").tofile(req["out"])
        return {"shape": list(y.shape)}

    def repeat(req):
        forward = runners[req["id"]]
        seconds = float(req["seconds"])
        if not seconds >= 0:
            raise ValueError("seconds must be >= 0")
        calls = 0
        c0 = time.process_time()
        t0 = time.perf_counter()
        while calls == 0 or time.perf_counter() - t0 < seconds:
            forward()
            calls += 1
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0
        return {"calls": calls, "ms": wall / calls * 1000, "cpu_ms": cpu / calls * 1000}

    return serve({"init": init, "logits": logits, "repeat": repeat})


if __name__ == "__main__":
    sys.exit(main())
