#!/usr/bin/env python3
"""PyTorch peer of lowbit's MobileNetV2-style `mobilenet` (src/nn/models/mobilenet.ts).

The net is rebuilt with torch modules whose state_dict keys are lowbit's own (BatchNorm buffers
renamed: runningMean -> running_mean, runningVar -> running_var, numBatchesTracked ->
num_batches_tracked), so lowbit's weights load with load_state_dict(strict=True):

  stem    Conv(in, c0, 3, stride s0, pad 1, no bias) - BN - ReLU6
  blocks  per block: [expand Conv1x1(in, h) - BN - ReLU6] (absent when h == in and the key is
          missing), depthwise Conv3x3(h, h, groups=h, stride s, pad 1) - BN - ReLU6, project
          Conv1x1(h, out) - BN, + x when s == 1 and in == out
  head    [Conv1x1 - BN - ReLU6] (when present), global average pool, flatten, fc Linear
Widths come from the weights; the strides (not in the weights) from --config
'{"stemStride": 2, "blockStrides": [1, 2, 1, 2, 1, 1]}'.

Tasks (one JSON object on stdout):
  logits  --input RAW (little-endian float32 [batch, C, H, W]) --batch N --out RAW: writes the
          eval-mode logits as float32
  infer   eval-mode forward images/s under torch.inference_mode (median of --repeats)
  train   training samples/s: Adam steps on random batches (train mode, BN statistics updated)
If torch cannot be imported, prints {"skipped": "<reason>"} and exits 0.
Threads: torch.set_num_threads(--threads, default 2); run with OPENBLAS_NUM_THREADS=1.
"""
import argparse
import json
import os
import statistics
import sys
import time

from torch_seq import read_safetensors

BN_BUFFERS = {"runningMean": "running_mean", "runningVar": "running_var", "numBatchesTracked": "num_batches_tracked"}


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def torch_key(name):
    head, _, last = name.rpartition(".")
    return f"{head}.{BN_BUFFERS.get(last, last)}" if head else name


def build(torch, weights, config):
    nn = torch.nn

    def conv_bn(cin, cout, k, stride=1, groups=1, act=True):
        layers = [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        if act:
            layers.append(nn.ReLU6())
        return nn.Sequential(*layers)

    class Block(nn.Module):
        def __init__(self, prefix, stride):
            super().__init__()
            dw = weights[f"{prefix}.depthwise.0.weight"]
            project = weights[f"{prefix}.project.0.weight"]
            hidden, out = dw.shape[0], project.shape[0]
            expand = weights.get(f"{prefix}.expand.0.weight")
            cin = expand.shape[1] if expand is not None else hidden
            self.expand = conv_bn(cin, hidden, 1) if expand is not None else None
            self.depthwise = conv_bn(hidden, hidden, 3, stride=stride, groups=hidden)
            self.project = conv_bn(hidden, out, 1, act=False)
            self.residual = stride == 1 and cin == out

        def forward(self, x):
            y = self.project(self.depthwise(self.expand(x) if self.expand is not None else x))
            return y + x if self.residual else y

    class MobileNet(nn.Module):
        def __init__(self):
            super().__init__()
            stem = weights["stem.0.weight"]
            self.stem = conv_bn(stem.shape[1], stem.shape[0], 3, stride=int(config["stemStride"]))
            strides = [int(s) for s in config["blockStrides"]]
            count = len({k.split(".")[1] for k in weights if k.startswith("blocks.")})
            if count != len(strides):
                raise ValueError(f"{count} blocks in the weights, {len(strides)} blockStrides")
            self.blocks = nn.Sequential(*[Block(f"blocks.{i}", s) for i, s in enumerate(strides)])
            head = weights.get("head.0.weight")
            self.head = conv_bn(head.shape[1], head.shape[0], 1) if head is not None else None
            fc = weights["fc.weight"]
            self.fc = nn.Linear(fc.shape[1], fc.shape[0])

        def forward(self, x):
            y = self.blocks(self.stem(x))
            if self.head is not None:
                y = self.head(y)
            return self.fc(torch.flatten(torch.mean(y, dim=(2, 3), keepdim=True), 1))

    model = MobileNet()
    state = {torch_key(k): torch.from_numpy(v) for k, v in weights.items()}
    for k, v in state.items():
        if k.endswith("num_batches_tracked"):
            state[k] = v.reshape(()).to(torch.long)
    model.load_state_dict(state, strict=True)
    return model


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=["logits", "infer", "train"], required=True)
    p.add_argument("--weights", required=True, help="safetensors of lowbit's mobilenet stateDict()")
    p.add_argument("--config", required=True, help='JSON: {"stemStride": s, "blockStrides": [...]}')
    p.add_argument("--input", help="logits: raw float32 input [batch, C, H, W]")
    p.add_argument("--out", help="logits: raw float32 output path")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--shape", default="1,28,28", help="one sample's shape C,H,W")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seconds", type=float, default=1.0, help="per repeat")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lr", type=float, default=0.002)
    args = p.parse_args()
    try:
        import numpy as np
        import torch
    except Exception as exc:  # noqa: BLE001 - any import failure means "no peer"
        emit({"skipped": f"torch import failed: {type(exc).__name__}: {exc}"})
        return 0
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build(torch, read_safetensors(np, args.weights), json.loads(args.config))
    shape = [int(d) for d in args.shape.split(",")]
    base = {"torch": torch.__version__, "threads": torch.get_num_threads(), "task": args.task, "batch": args.batch}

    if args.task == "logits":
        x = np.fromfile(args.input, dtype="<f4").reshape([args.batch, *shape])
        model.eval()
        with torch.inference_mode():
            y = model(torch.from_numpy(x)).numpy().astype("<f4")
        tmp = args.out + ".tmp"
        y.tofile(tmp)
        os.replace(tmp, args.out)
        emit({**base, "shape": list(y.shape)})
        return 0

    x = torch.randn(args.batch, *shape)
    if args.task == "infer":
        model.eval()

        def step():
            model(x)
        ctx = torch.inference_mode
    else:
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
        labels = torch.randint(0, model.fc.out_features, (args.batch,))
        loss_fn = torch.nn.CrossEntropyLoss()

        def step():
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), labels)
            loss.backward()
            opt.step()
            loss.item()
        ctx = torch.enable_grad
    values = []
    with ctx():
        for _ in range(3):
            step()
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            n = 0
            while n < 1 or time.perf_counter() - t0 < args.seconds:
                step()
                n += 1
            values.append(n * args.batch / (time.perf_counter() - t0))
    emit({**base, "unit": "images/s" if args.task == "infer" else "samples/s", "repeats": values, "median": statistics.median(values)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
