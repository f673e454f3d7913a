#!/usr/bin/env python3
"""Long-lived PyTorch peer for lowbit's `rnn` bench section, driven over stdin/stdout.

One JSON object per line in each direction, so that the caller can interleave PyTorch repeats
with its own (the process idles on stdin in between and keeps its warm state).

On start it prints {"ready": true, "torch": ..., "blas": ..., "threads": ...}, or
{"skipped": "<reason>"} and exits 0 when torch cannot be imported. Then, per request line:

  {"op": "init", "id": "lstm-h64", "kind": "LSTM" | "GRU", "input": 16, "hidden": 64,
   "classes": 10, "batch": 32, "seq": 32, "lr": 0.001, "warmup": 5, "seed": 0}
      builds torch.nn.<kind>(input, hidden, batch_first=True) + Linear(hidden, classes), Adam(lr),
      a random input [batch, seq, input] and labels arange(batch) % classes, runs `warmup`
      untimed steps; answers {"ok": true}
  {"op": "repeat", "id": "lstm-h64", "steps": 30}
      times `steps` training steps; answers {"ok": true, "ms": wall ms per step,
      "cpu_ms": process CPU ms per step}

  {"op": "init", "id": "transformer-lm", "kind": "transformer", "weights": "<safetensors path>",
   "ids": "<raw little-endian int32 path>", "targets": "<same>", "batch": N, "seq": L, "heads": 4,
   "activation": "gelu-tanh", "eps": 1e-5, "lr": 0.001, "warmup": 3}
      builds lowbit's TransformerLM as torch modules (torch_seq.build_transformer_lm), loads lowbit's
      weights (strict), reads ids [N, L] and every-position targets [N L]; answers {"ok": true,
      "loss": the cross-entropy of the first forward, before any step} (so the caller can check that
      both sides hold the same model), then runs `warmup` untimed steps

A step: forward, cross-entropy on the last time step's output (transformer: over every position),
zero_grad, backward, Adam step.
Errors answer {"error": "<message>"}. End of input ends the process.
Threads: torch.set_num_threads(--threads); run with OPENBLAS_NUM_THREADS=1.
"""
import sys
import time

from json_line_peer import serve, start, threads_argument


def make_stepper(torch, req):
    torch.manual_seed(int(req.get("seed", 0)))
    kind = req["kind"]
    if kind not in ("LSTM", "GRU"):
        raise ValueError(f"kind must be LSTM or GRU, got {kind!r}")
    batch, seq, inp = int(req["batch"]), int(req["seq"]), int(req["input"])
    hidden, classes = int(req["hidden"]), int(req.get("classes", 10))
    rnn = getattr(torch.nn, kind)(inp, hidden, batch_first=True)
    head = torch.nn.Linear(hidden, classes)
    opt = torch.optim.Adam(list(rnn.parameters()) + list(head.parameters()), lr=float(req.get("lr", 1e-3)))
    x = torch.randn(batch, seq, inp)
    y = torch.arange(batch) % classes

    def step():
        out, _ = rnn(x)
        loss = torch.nn.functional.cross_entropy(head(out[:, -1]), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(int(req.get("warmup", 5))):
        step()
    return step


def make_transformer_stepper(torch, req):
    import numpy as np
    from torch_seq import read_safetensors, transformer_lm_for

    weights = read_safetensors(np, req["weights"])
    batch, seq = int(req["batch"]), int(req["seq"])
    ids = np.fromfile(req["ids"], dtype="<i4")
    targets = np.fromfile(req["targets"], dtype="<i4")
    if ids.size != batch * seq or targets.size != batch * seq:
        raise ValueError(f"expected {batch} x {seq} ids and targets, got {ids.size} and {targets.size}")
    model = transformer_lm_for(torch, weights, req)
    vocab = weights["tokenEmbedding.weight"].shape[0]
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=float(req.get("lr", 1e-3)))
    x = torch.from_numpy(ids.astype("int64")).reshape(batch, seq)
    y = torch.from_numpy(targets.astype("int64"))

    def loss_of():
        return torch.nn.functional.cross_entropy(model(x).reshape(batch * seq, vocab), y)

    with torch.no_grad():
        first = float(loss_of())

    def step():
        loss = loss_of()
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(int(req.get("warmup", 3))):
        step()
    return step, {"loss": first}


def main():
    torch = start(threads_argument(__doc__))
    if torch is None:
        return 0

    steppers = {}

    def init(req):
        if req.get("kind") == "transformer":
            steppers[req["id"]], answer = make_transformer_stepper(torch, req)
            return answer
        steppers[req["id"]] = make_stepper(torch, req)
        return {}

    def repeat(req):
        step = steppers[req["id"]]
        steps = int(req["steps"])
        if steps < 1:
            raise ValueError("steps must be >= 1")
        c0 = time.process_time()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0
        return {"ms": wall / steps * 1000, "cpu_ms": cpu / steps * 1000}

    return serve({"init": init, "repeat": repeat})


if __name__ == "__main__":
    sys.exit(main())
