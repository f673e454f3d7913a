import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { noGrad } from '../autograd/index.ts';
import { availableBackends, withBackend } from '../backend/index.ts';
import { loadNative } from '../backend/native/index.ts';
import { profileOps } from '../backend/registry.ts';
import { manualSeed, mul, randn, sum, Tensor } from '../tensor/index.ts';
import { ReLU } from './activation.ts';
import { Conv2d } from './conv.ts';
import { forwardChain } from './fusion.ts';
import type { TensorModule } from './module.ts';
import { lenet5 } from './models/index.ts';
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

  it('leaves subclasses, patched forwards and padded pooling alone', () => {
    manualSeed(6);
    class MyConv extends Conv2d {}
    const x = randn([1, 2, 8, 8]);
    const sub = [new MyConv(2, 3, 3), new ReLU()];
    assert.equal(opCalls(() => void noGrad(() => forwardChain(sub, x))).get('conv2dFused'), undefined);
    const patched = new Conv2d(2, 3, 3);
    const original = patched.forward.bind(patched);
    let seen = 0;
    patched.forward = (t: Tensor): Tensor => { seen++; return original(t); };
    assert.equal(opCalls(() => void noGrad(() => forwardChain([patched, new ReLU()], x))).get('conv2dFused'), undefined);
    assert.equal(seen, 1);
    const padded = [new Conv2d(2, 3, 3), new MaxPool2d(2, { padding: 1 })];
    const calls = opCalls(() => void noGrad(() => forwardChain(padded, x)));
    assert.equal(calls.get('conv2dFused'), undefined);
    assert.equal(calls.get('maxPool2d'), 1);
  });
});
