#!/usr/bin/env python3
"""PyTorch fp32 peer for bench/residual/peers.ts: ResNet-8 inference images/s. Prints one JSON object.

The model has lowbit's `nn.resnet8()` shapes (src/nn/models/resnet.ts): a conv3x3(1->16)-BN-ReLU
stem, three BasicBlocks (16, 32, 64 channels; stride 2 in the last two; conv3x3-BN-ReLU-conv3x3-BN
plus the shortcut, a 1x1 conv-BN projection when the stride or width changes; ReLU after the
sum), global average pooling, Linear(64, 10); convs without bias; 77,754 parameters. Eval mode
(BatchNorm with running statistics), torch.no_grad(), default initialisation (speed does not
depend on the weights). Input [batch, 1, 28, 28] random normal.

  python3 torch_resnet8.py --batch 64 [--threads 2] [--repeats 5] [--target-seconds 1]
  python3 torch_resnet8.py --serve [--threads 2]

--serve: prints {"ready": ...} (versions, parameter count), then per line "BATCH STEPS" read from
stdin runs STEPS forward passes on one random batch of BATCH images and prints {"seconds": wall,
"cpu": process CPU seconds of all threads}
(so that a driver can interleave this peer with others, round by round); ends at EOF.

If torch cannot be imported, prints {"skipped": "<reason>"} and exits 0.
"""
import argparse
import json
import statistics
import sys
import time


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--target-seconds", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--serve", action="store_true")
    a = p.parse_args()
    try:
        import torch
        from torch import nn
    except Exception as e:  # noqa: BLE001 - any import failure is a skip
        emit({"skipped": f"torch not importable: {e}"})
        return

    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.main1 = nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())
            self.main2 = nn.Sequential(nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout))
            self.shortcut = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
                             if stride != 1 or cin != cout else None)
            self.relu = nn.ReLU()

        def forward(self, x):
            y = self.main2(self.main1(x))
            return self.relu(y + (self.shortcut(x) if self.shortcut is not None else x))

    class ResNet8(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
            self.stages = nn.Sequential(BasicBlock(16, 16, 1), BasicBlock(16, 32, 2), BasicBlock(32, 64, 2))
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1))

    model = ResNet8().eval()
    params = sum(t.numel() for t in model.parameters())
    if a.serve:
        emit({"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads(), "params": params})
        inputs = {}
        with torch.no_grad():
            for line in sys.stdin:
                batch, steps = (int(v) for v in line.split())
                x = inputs.setdefault(batch, torch.randn(batch, 1, 28, 28))
                start, cpu = time.perf_counter(), time.process_time()
                for _ in range(steps):
                    model(x)
                emit({"seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu})
        return
    x = torch.randn(a.batch, 1, 28, 28)
    with torch.no_grad():
        for _ in range(a.warmup):
            model(x)
        t0 = time.perf_counter()
        probe = 0
        while probe < 2 or (time.perf_counter() - t0 < 0.25 and probe < 50):
            model(x)
            probe += 1
        per_call = (time.perf_counter() - t0) / probe
        steps = max(2, round(a.target_seconds / per_call))
        rates = []
        for _ in range(a.repeats):
            start = time.perf_counter()
            for _ in range(steps):
                model(x)
            rates.append(steps * a.batch / (time.perf_counter() - start))
    emit({
        "torch": torch.__version__, "threads": torch.get_num_threads(), "params": params, "batch": a.batch,
        "steps": steps, "repeats": rates, "median": statistics.median(rates),
    })


if __name__ == "__main__":
    main()
