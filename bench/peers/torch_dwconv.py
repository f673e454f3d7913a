#!/usr/bin/env python3
"""Long-lived PyTorch peer of bench/native/depthwise.ts: depthwise conv2d (groups = C = O) timings,
driven one JSON object per line over stdin/stdout (json_line_peer.py) so the caller interleaves
PyTorch's repeats with lowbit's in the same run.

On start it prints {"ready": true, "torch": ..., "blas": ..., "threads": ..., "qengines": [...]}, or
{"skipped": "<reason>"} when torch cannot be imported. Then, per request line:

  {"op": "init", "id": "L1", "N": 64, "C": 96, "H": 14, "k": 3, "stride": 1, "pad": 1, "warmup": 3}
      random x [N, C, H, H] (NCHW float32), a torch.nn.Conv2d(C, C, k, stride, pad, groups=C,
      bias=False), and, when the fbgemm engine exists, the same layer as torch's quantized Conv2d on the
      first engine of fbgemm, onednn, qnnpack that this build has (quint8 activations, per-channel
      qint8 weights, channels_last input); runs
      `warmup` untimed calls of each mode; answers {"ok": true, "quantized": bool, "qengine": name or null}
  {"op": "repeat", "id": "L1", "mode": "fwd" | "fwdbwd" | "qfwd", "reps": 10}
      times `reps` calls: fwd = y = conv(x) under no_grad; fwdbwd = y = conv(x) with x requiring grad,
      then y.backward(dy) (grad input and grad weight); qfwd = the quantized conv on the quantized
      input. Answers {"ok": true, "ms": wall ms per call}.

Threads: torch.set_num_threads(--threads) (default 2); run with OPENBLAS_NUM_THREADS=1.
"""
import sys
import time

from json_line_peer import serve, start, threads_argument

LAYERS = {}


def init(torch, req):
    torch.manual_seed(0)
    n, c, h, k = int(req["N"]), int(req["C"]), int(req["H"]), int(req["k"])
    stride, pad = int(req["stride"]), int(req["pad"])
    conv = torch.nn.Conv2d(c, c, k, stride=stride, padding=pad, groups=c, bias=False)
    x = torch.randn(n, c, h, h)
    with torch.no_grad():
        y = conv(x)
    layer = {"conv": conv, "x": x, "xg": x.clone().requires_grad_(True), "dy": torch.randn_like(y), "q": None}
    engine = next((e for e in ("fbgemm", "onednn", "qnnpack") if e in torch.backends.quantized.supported_engines), None)
    if engine is not None:
        torch.backends.quantized.engine = engine
        from torch.ao.nn.quantized import Conv2d as QConv2d

        q = QConv2d(c, c, k, stride=stride, padding=pad, groups=c, bias=True)
        w = conv.weight.detach()
        scales = w.abs().amax(dim=(1, 2, 3)).clamp_min(1e-8) / 127.0
        qw = torch.quantize_per_channel(w, scales, torch.zeros(c, dtype=torch.long), 0, torch.qint8)
        q.set_weight_bias(qw, torch.zeros(c))
        q.scale, q.zero_point = 0.05, 64
        qx = torch.quantize_per_tensor(x.contiguous(memory_format=torch.channels_last), 0.05, 64, torch.quint8)
        layer["q"] = (q, qx)
    LAYERS[req["id"]] = layer
    for _ in range(int(req.get("warmup", 3))):
        for mode in ("fwd", "fwdbwd", "qfwd"):
            run(torch, layer, mode)
    return {"quantized": layer["q"] is not None, "qengine": engine}


def run(torch, layer, mode):
    if mode == "fwd":
        with torch.no_grad():
            layer["conv"](layer["x"])
    elif mode == "fwdbwd":
        layer["conv"].weight.grad = None
        layer["xg"].grad = None
        layer["conv"](layer["xg"]).backward(layer["dy"])
    elif mode == "qfwd":
        if layer["q"] is not None:
            q, qx = layer["q"]
            q(qx)
    else:
        raise ValueError(f"unknown mode {mode!r}")


def main():
    threads = threads_argument(__doc__)
    torch = start(threads, lambda t: {"qengines": list(t.backends.quantized.supported_engines)})
    if torch is None:
        return 0

    def repeat(req):
        layer = LAYERS[req["id"]]
        mode, reps = req["mode"], int(req.get("reps", 10))
        if mode == "qfwd" and layer["q"] is None:
            raise ValueError("no quantized engine (fbgemm / onednn / qnnpack): the quantized conv is not available")
        t0 = time.perf_counter()
        for _ in range(reps):
            run(torch, layer, mode)
        return {"ms": (time.perf_counter() - t0) * 1000.0 / reps}

    return serve({"init": lambda req: init(torch, req), "repeat": repeat})


if __name__ == "__main__":
    sys.exit(main())
