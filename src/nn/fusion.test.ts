import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { noGrad } from '../autograd/index.ts';
import { availableBackends, withBackend } from '../backend/index.ts';
import { loadNative } from '../backend/native/index.ts';
import { setRecyclePoison } from '../backend/recycle.ts';
import { profileOps } from '../backend/registry.ts';
import { manualSeed, mul, randn, sum, Tensor } from '../tensor/index.ts';
import { ReLU, ReLU6 } from './activation.ts';
import { BatchNorm2d } from './batchnorm.ts';
import { Conv2d } from './conv.ts';
import { forwardChain } from './fusion.ts';
import type { TensorModule } from './module.ts';
import { lenet5, mobilenet } from './models/index.ts';
import { MaxPool2d } from './pooling.ts';
import { Sequential } from './sequential.ts';

loadNative();

/** |fused - unfused| <= 1e-5 (1 + |unfused|): the same float32 products, possibly summed in another order. */
const TOL = 1e-5;

function close(actual: Tensor, expected: Tensor, what: string): void {
  assert.deepEqual(actual.shape, expected.shape, `${what}: shape`);
  for (let i = 0; i < expected.size; i++) {
    const a = actual.data[i]!;
    const e = expected.data[i]!;
    assert.ok(Math.abs(a - e) <= TOL * (1 + Math.abs(e)), `${what}[${i}]: fused ${a} vs unfused ${e}`);
  }
}

/** The chain run layer by layer, without fusion. */
function unfused(layers: readonly TensorModule[], x: Tensor): Tensor {
  let y = x;
  for (const layer of layers) y = layer.forward(y);
  return y;
}

function opCalls(fn: () => void): Map<string, number> {
  const calls = new Map<string, number>();
  for (const [key, { calls: n }] of profileOps(fn)) {
    const op = key.split('/')[1]!;
    calls.set(op, (calls.get(op) ?? 0) + n);
  }
  return calls;
}

describe('forwardChain: conv–relu–pool fusion for inference', () => {
  for (const backend of availableBackends()) {
    it(`LeNet-5 under noGrad equals the unfused layers, with two fused ops (${backend})`, () => {
      withBackend(backend, () => {
        manualSeed(3);
        const model = lenet5();
        model.eval();
        const x = randn([5, 1, 28, 28]);
        const layers = [model.conv1, model.relu1, model.pool1, model.conv2, model.relu2, model.pool2, model.flatten, model.fc1, model.relu3, model.fc2, model.relu4, model.fc3];
        let fused!: Tensor;
        const calls = opCalls(() => { fused = noGrad(() => model.forward(x)); });
        assert.equal(calls.get('conv2dFused'), 2);
        assert.equal(calls.get('conv2d'), undefined);
        assert.equal(calls.get('maxPool2d'), undefined);
        close(fused, noGrad(() => unfused(layers, x)), `lenet5 ${backend}`);
      });
    });
  }

  it('odd geometry (padding, stride 1, 3x3 pool stride 2, no bias) equals the unfused chain', () => {
    manualSeed(4);
    const layers: TensorModule[] = [new Conv2d(3, 5, 3, { padding: 1, bias: false }), new ReLU(), new MaxPool2d(3, { stride: 2 }), new Conv2d(5, 4, 2), new MaxPool2d(2)];
    const x = randn([2, 3, 11, 9]);
    let fused!: Tensor;
    const calls = opCalls(() => { fused = noGrad(() => new Sequential(...layers).forward(x)); });
    assert.equal(calls.get('conv2dFused'), 2);
    close(fused, noGrad(() => unfused(layers, x)), 'sequential');
  });

  it('training: conv with bias, then ReLU-fused pooling; outputs and gradients equal the unfused ones', () => {
    manualSeed(5);
    const model = lenet5();
    const x = randn([3, 1, 28, 28]);
    const layers = [model.conv1, model.relu1, model.pool1, model.conv2, model.relu2, model.pool2, model.flatten, model.fc1, model.relu3, model.fc2, model.relu4, model.fc3];
    let fusedOut!: Tensor;
    const calls = opCalls(() => { fusedOut = model.forward(x); });
    assert.equal(calls.get('conv2dFused'), 2);
    assert.equal(calls.get('maxPool2d'), 2);
    assert.equal(calls.get('conv2d'), undefined);
    assert.equal(calls.get('relu'), 2, 'only the two fully connected ReLUs run on their own');
    const backwardCalls = opCalls(() => { model.zeroGrad(); sum(fusedOut).backward(); });
    assert.equal(backwardCalls.get('reluBackward'), 2, 'the conv blocks need no ReLU backward');
    assert.equal(backwardCalls.get('maxPool2dBackward'), 2);
    const gradsOf = (out: Tensor): Float32Array[] => {
      model.zeroGrad();
      sum(mul(out, out)).backward();
      return model.parameters().map((p) => Float32Array.from(p.grad!.data));
    };
    const fusedGrads = gradsOf(fusedOut);
    const plainOut = unfused(layers, x);
    close(fusedOut, plainOut, 'training forward');
    const plainGrads = gradsOf(plainOut);
    fusedGrads.forEach((g, i) => close(new Tensor(g, [g.length]), new Tensor(plainGrads[i]!, [g.length]), `grad ${i}`));
  });

  for (const backend of availableBackends()) {
    it(`training: padded 3x3 pooling with the ReLU fused gives the unfused gradients (${backend})`, () => {
      withBackend(backend, () => {
        manualSeed(7);
        const layers: TensorModule[] = [new Conv2d(3, 5, 3, { padding: 1 }), new ReLU(), new MaxPool2d(3, { stride: 2, padding: 1 })];
        const x = randn([2, 3, 9, 8]);
        x.requiresGrad = true;
        const grads = (run: () => Tensor): Float32Array[] => {
          for (const l of layers) l.zeroGrad();
          x.grad = null;
          const out = run();
          sum(mul(out, out)).backward();
          return [x, ...layers.flatMap((l) => l.parameters())].map((p) => Float32Array.from(p.grad!.data));
        };
        let calls!: Map<string, number>;
        let fused!: Float32Array[];
        calls = opCalls(() => { fused = grads(() => forwardChain(layers, x)); });
        assert.equal(calls.get('relu'), undefined);
        assert.equal(calls.get('reluBackward'), undefined);
        const plain = grads(() => unfused(layers, x));
        fused.forEach((g, i) => close(new Tensor(g, [g.length]), new Tensor(plain[i]!, [g.length]), `grad ${i}`));
      });
    });
  }

  for (const backend of availableBackends()) {
    it(`conv–BatchNorm–ReLU6 in eval mode: one conv2dFused op per conv, outputs equal the unfused layers (${backend})`, () => {
      withBackend(backend, () => {
        manualSeed(8);
        const model = mobilenet({ widthMultiplier: 0.5 });
        model.train();
        noGrad(() => model.forward(randn([16, 1, 28, 28]))); // running statistics away from 0 / 1
        for (const m of model.modules()) if (m instanceof BatchNorm2d) for (let c = 0; c < m.numFeatures; c++) m.weight!.data[c] = (c % 3 === 0 ? -0.7 : 1.3) * (1 + c / 10);
        model.eval();
        const x = randn([3, 1, 28, 28]);
        let fused!: Tensor;
        const calls = opCalls(() => { fused = noGrad(() => model.forward(x)); });
        const convs = model.modules().filter((m) => m instanceof Conv2d).length;
        assert.equal(calls.get('conv2dFused'), convs);
        assert.equal(calls.get('conv2d'), undefined);
        assert.equal(calls.get('clamp'), undefined);
        assert.equal(calls.get('mul'), undefined, 'no BatchNorm multiply runs on its own');
        // With gradients recorded nothing fuses: the layers run one by one.
        const plain = model.forward(x);
        assert.equal(opCalls(() => void model.forward(x)).get('conv2dFused'), undefined);
        // The same conv kernel, then x·scale rounded and + shift as the BatchNorm's mul and add: bit for bit.
        assert.deepEqual(Array.from(fused.data), Array.from(plain.data), `mobilenet ${backend}`);
        // No-grad forwards hand their intermediates back to the pool (filled with NaN when taken
        // again here): repeated calls still give the same logits, so nothing is read after release.
        const poisoned = setRecyclePoison(true);
        try {
          for (let k = 0; k < 2; k++) assert.deepEqual(Array.from(noGrad(() => model.forward(x)).data), Array.from(plain.data), `mobilenet ${backend}, call ${k}`);
        } finally {
          setRecyclePoison(poisoned);
        }
      });
    });
  }

  it('conv–BN fusion: a conv with a bias, a training-mode or patched BatchNorm, or a bare conv–BN run unfused or without the activation', () => {
    manualSeed(9);
    const x = randn([2, 3, 8, 8]);
    const bn = () => { const b = new BatchNorm2d(4); b.runningMean!.data.set([0.5, -1, 0.25, 2]); b.runningVar!.data.set([2, 0.5, 1, 4]); b.bias!.data.set([0.1, 0.2, -0.3, 1]); b.weight!.data.set([1, -2, 0.5, 3]); b.eval(); return b; };
    const biased = [new Conv2d(3, 4, 3, { padding: 1 }), bn(), new ReLU6()];
    const c1 = opCalls(() => void noGrad(() => forwardChain(biased, x)));
    // (a conv with a bias is one conv2dFused op of its own, without activation: ops.conv2d)
    assert.equal(c1.get('conv2dFused'), 1);
    assert.equal(c1.get('clamp'), 1);
    assert.ok((c1.get('mul') ?? 0) >= 1, 'the eval BatchNorm runs unfused');
    const training = [new Conv2d(3, 4, 3, { padding: 1, bias: false }), bn(), new ReLU()];
    training[1]!.train();
    assert.equal(opCalls(() => void noGrad(() => forwardChain(training, x))).get('conv2dFused'), undefined);
    const patchedBn = bn();
    const original = patchedBn.forward.bind(patchedBn);
    patchedBn.forward = (t: Tensor): Tensor => original(t);
    assert.equal(opCalls(() => void noGrad(() => forwardChain([new Conv2d(3, 4, 3, { bias: false }), patchedBn], x))).get('conv2dFused'), undefined);
    // conv → BN with no activation (a linear bottleneck), then a ReLU that is not folded a second time.
    const bare = [new Conv2d(3, 4, 3, { padding: 1, bias: false }), bn()];
    let y!: Tensor;
    const c2 = opCalls(() => { y = noGrad(() => forwardChain(bare, x)); });
    assert.equal(c2.get('conv2dFused'), 1);
    close(y, noGrad(() => unfused(bare, x)), 'conv-bn');
    const relu = [new Conv2d(3, 4, 3, { padding: 1, bias: false }), bn(), new ReLU(), new MaxPool2d(2)];
    const c3 = opCalls(() => { y = noGrad(() => forwardChain(relu, x)); });
    assert.equal(c3.get('conv2dFused'), 1);
    assert.equal(c3.get('maxPool2d'), 1);
    close(y, noGrad(() => unfused(relu, x)), 'conv-bn-relu-pool');
  });

  for (const backend of availableBackends()) {
    it(`training: BatchNorm2d → ReLU6 as one clamped batchNorm op; outputs, gradients and running statistics equal the unfused layers (${backend})`, () => {
      withBackend(backend, () => {
        manualSeed(10);
        const layers: TensorModule[] = [new Conv2d(3, 8, 3, { padding: 1, bias: false }), new BatchNorm2d(8), new ReLU6(), new Conv2d(8, 8, 3, { padding: 1, groups: 8, bias: false }), new BatchNorm2d(8), new ReLU6()];
        for (const l of layers) if (l instanceof BatchNorm2d) { l.weight!.data.set([3, 2, -2, 4, 1, 2.5, 3, -3]); l.bias!.data.set([1, 3, 0, 2, 5, 0.5, 4, 2]); }
        const x = randn([4, 3, 6, 6]);
        const snapshot = () => layers.flatMap((l) => l.buffers()).map((b) => Float32Array.from(b.data));
        const run = (fn: () => Tensor): { out: Tensor; grads: Float32Array[]; buffers: Float32Array[] } => {
          for (const l of layers) if (l instanceof BatchNorm2d) l.resetRunningStats();
          for (const l of layers) l.zeroGrad();
          const out = fn();
          sum(mul(out, out)).backward();
          return { out, grads: layers.flatMap((l) => l.parameters()).map((p) => Float32Array.from(p.grad!.data)), buffers: snapshot() };
        };
        let calls!: Map<string, number>;
        let fused!: ReturnType<typeof run>;
        calls = opCalls(() => { fused = run(() => forwardChain(layers, x)); });
        assert.equal(calls.get('clamp'), undefined);
        assert.equal(calls.get('clampBackward'), undefined);
        assert.equal(calls.get('batchNorm'), 2);
        const plain = run(() => unfused(layers, x));
        const y = Array.from(fused.out.data);
        assert.ok(y.some((v) => v === 0) && y.some((v) => v === 6), 'both ReLU6 bounds are reached');
        close(fused.out, plain.out, 'output');
        fused.grads.forEach((g, i) => close(new Tensor(g, [g.length]), new Tensor(plain.grads[i]!, [g.length]), `grad ${i}`));
        fused.buffers.forEach((b, i) => assert.deepEqual(Array.from(b), Array.from(plain.buffers[i]!), `running statistics ${i}`));
      });
    });
  }

  it('leaves subclasses, patched forwards and padded pooling alone', () => {
    manualSeed(6);
    class MyConv extends Conv2d {}
    const x = randn([1, 2, 8, 8]);
    const sub = [new MyConv(2, 3, 3), new ReLU()];
    // Each biased conv is one conv2dFused op of its own (ops.conv2d); the ReLU stays a separate op.
    const cs = opCalls(() => void noGrad(() => forwardChain(sub, x)));
    assert.equal(cs.get('conv2dFused'), 1);
    assert.equal(cs.get('relu'), 1);
    const patched = new Conv2d(2, 3, 3);
    const original = patched.forward.bind(patched);
    let seen = 0;
    patched.forward = (t: Tensor): Tensor => { seen++; return original(t); };
    const cp = opCalls(() => void noGrad(() => forwardChain([patched, new ReLU()], x)));
    assert.equal(cp.get('conv2dFused'), 1);
    assert.equal(cp.get('relu'), 1);
    assert.equal(seen, 1);
    const padded = [new Conv2d(2, 3, 3), new MaxPool2d(2, { padding: 1 })];
    const calls = opCalls(() => void noGrad(() => forwardChain(padded, x)));
    assert.equal(calls.get('conv2dFused'), 1);
    assert.equal(calls.get('maxPool2d'), 1);
  });
});
