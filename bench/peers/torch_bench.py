#!/usr/bin/env python3
"""PyTorch peer for lowbit's benchmarks: prints exactly one JSON object on stdout.

Tasks
  train   training samples/s: optimizer steps (SGD momentum by default) on cached random
          MNIST-shaped batches
  epoch   wall time of one epoch over 60000 random MNIST-shaped samples held in memory
          (shuffled index per epoch, batches sliced out, like a DataLoader over tensors)
  infer   fp32 inference images/s (eval mode, no_grad); with --int8 the model is quantized first
          with torch.ao eager static quantization (fbgemm engine, per-channel int8 weights, uint8
          activations, Conv/Linear+ReLU fused, calibrated on 8 random batches)
  export  writes an fp32 ONNX model (opset 13, dynamic batch) to --out
  info    versions only (torch, BLAS library, CPU capability)

Models mirror lowbit's `createModel`: lenet5 = Conv(1,6,5,pad 2)-ReLU-MaxPool2-Conv(6,16,5)-ReLU-
MaxPool2-Flatten-Linear(400,120)-ReLU-Linear(120,84)-ReLU-Linear(84,10); mlp = 784-512-512-10
with ReLU. PyTorch's default initialisation (Kaiming-uniform weights, fan-in uniform biases).

If torch cannot be imported, prints {"skipped": "<reason>"} and exits 0.
Threads: torch.set_num_threads(--threads, default 2); run with OPENBLAS_NUM_THREADS=1.
"""
import argparse
import json
import os
import statistics
import sys
import time


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=["train", "infer", "export", "epoch", "info"], required=True)
    p.add_argument("--model", choices=["lenet5", "mlp"], default="lenet5")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=20,
                   help="steps (train) or forward passes (infer) per repeat; 0 = calibrate to --target-seconds")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=5, help="untimed steps before the first repeat")
    p.add_argument("--target-seconds", type=float, default=1.0, help="per-repeat duration when --steps 0")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd",
                   help="sgd (lr, momentum) or adam (lr; betas 0.9/0.999, eps 1e-8)")
    p.add_argument("--samples", type=int, default=60000, help="epoch size for --task epoch")
    p.add_argument("--out", default="lenet5.onnx", help="output path for --task export")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--int8", action="store_true", help="--task infer: torch.ao static int8 (fbgemm)")
    return p.parse_args()


def loaded_blas():
    """Which BLAS library this process mapped (Debian's torch links libblas.so.3 via alternatives)."""
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "blas" in line.lower() and "/" in line}
        return ", ".join(sorted(os.path.realpath(p) for p in libs)) or "none mapped"
    except OSError:
        return "unknown"


def cpu_capability(torch):
    for line in torch.__config__.show().splitlines():
        if "CPU capability usage" in line:
            return line.split(":", 1)[1].strip()
    return "unknown"


def build(nn, name):
    if name == "lenet5":
        return nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(400, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, 10),
        )
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 512), nn.ReLU(),
        nn.Linear(512, 512), nn.ReLU(),
        nn.Linear(512, 10),
    )


def quantize_int8(torch, nn, model, name, x):
    """Eager static int8: QuantStub - model - DeQuantStub, Conv/Linear + ReLU fused, fbgemm."""
    from torch.ao import quantization as tq
    engine = "fbgemm" if "fbgemm" in torch.backends.quantized.supported_engines else "qnnpack"
    torch.backends.quantized.engine = engine
    layers = list(model)
    fuse = [[str(i), str(i + 1)] for i in range(len(layers) - 1)
            if isinstance(layers[i], (nn.Conv2d, nn.Linear)) and isinstance(layers[i + 1], nn.ReLU)]
    tq.fuse_modules(model, fuse, inplace=True)
    wrapped = nn.Sequential(tq.QuantStub(), model, tq.DeQuantStub())
    wrapped.eval()
    wrapped.qconfig = tq.get_default_qconfig(engine)
    tq.prepare(wrapped, inplace=True)
    with torch.no_grad():
        for i in range(8):
            wrapped(x + 0.1 * i)
    tq.convert(wrapped, inplace=True)
    return wrapped


def main():
    args = parse_args()
    try:
        import torch
        from torch import nn
    except Exception as exc:  # noqa: BLE001 - any import failure means "no peer"
        emit({"skipped": f"torch import failed: {type(exc).__name__}: {exc}"})
        return 0

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    torch.manual_seed(args.seed)
    model = build(nn, args.model)
    base = {
        "torch": torch.__version__,
        "blas": loaded_blas(),
        "cpu_capability": cpu_capability(torch),
        "threads": torch.get_num_threads(),
        "task": args.task,
        "model": args.model,
        "batch": args.batch,
        "optimizer": f"{args.optimizer} lr {args.lr}" + (f" momentum {args.momentum}" if args.optimizer == "sgd" else ""),
        "data": "random MNIST-shaped tensors (N,1,28,28), labels uniform in [0,10)",
    }

    if args.task == "info":
        emit({k: base[k] for k in ("torch", "blas", "cpu_capability", "threads")})
        return 0

    if args.task == "export":
        model.eval()
        dummy = torch.randn(1, 1, 28, 28)
        out_dir = os.path.dirname(os.path.abspath(args.out))
        os.makedirs(out_dir, exist_ok=True)
        tmp = args.out + ".tmp"
        torch.onnx.export(
            model, dummy, tmp, opset_version=13,
            input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
        os.replace(tmp, args.out)
        emit({**base, "path": os.path.abspath(args.out), "opset": 13, "bytes": os.path.getsize(args.out)})
        return 0

    gen = torch.Generator().manual_seed(args.seed + 1)
    if args.task == "infer":
        model.eval()
        x = torch.randn(args.batch, 1, 28, 28, generator=gen)
        if args.int8:
            model = quantize_int8(torch, nn, model, args.model, x)
            base["quantization"] = "torch.ao eager static int8, engine " + torch.backends.quantized.engine

        def step():
            model(x)

        ctx = torch.no_grad
        unit, per_step = "images/s", args.batch
    else:
        model.train()
        if args.optimizer == "adam":
            opt = torch.optim.Adam(model.parameters(), lr=args.lr)
        else:
            opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
        loss_fn = nn.CrossEntropyLoss()
        ctx = torch.enable_grad
        if args.task == "epoch":
            xs = torch.randn(args.samples, 1, 28, 28, generator=gen)
            ys = torch.randint(0, 10, (args.samples,), generator=gen)
        else:
            pool = 8
            xs = torch.randn(pool * args.batch, 1, 28, 28, generator=gen)
            ys = torch.randint(0, 10, (pool * args.batch,), generator=gen)
        state = {"i": 0}

        def train_on(xb, yb):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            loss.item()  # lowbit's loop reads the loss every step too

        def step():
            n = xs.shape[0] // args.batch
            i = state["i"] % n
            state["i"] += 1
            sl = slice(i * args.batch, (i + 1) * args.batch)
            train_on(xs[sl], ys[sl])

        unit, per_step = "samples/s", args.batch

    with ctx():
        for _ in range(max(0, args.warmup)):
            step()

        if args.task == "epoch":
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                perm = torch.randperm(args.samples, generator=gen)
                for s in range(0, args.samples, args.batch):
                    idx = perm[s:s + args.batch]
                    train_on(xs[idx], ys[idx])
                times.append(time.perf_counter() - t0)
            emit({**base, "unit": "s", "samples": args.samples, "steps": -(-args.samples // args.batch),
                  "repeats": times, "median": statistics.median(times),
                  "samples_per_s": args.samples / statistics.median(times)})
            return 0

        steps = args.steps
        if steps <= 0:
            t0 = time.perf_counter()
            probe = 0
            while probe < 3 or time.perf_counter() - t0 < 0.2:
                step()
                probe += 1
            per = (time.perf_counter() - t0) / probe
            steps = max(2, min(2000, int(round(args.target_seconds / per))))

        values = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            values.append(steps * per_step / (time.perf_counter() - t0))

    emit({**base, "unit": unit, "steps": steps, "repeats": values, "median": statistics.median(values)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
