/**
 * The TransformerLM on the fused layer primitives (layerNorm, gelu, attention) against the same
 * model on the tensor-op compositions they replaced (`setFusedTransformerLayers(false)`): logits and
 * every parameter's gradient of the every-position loss, on the native backend (float32 kernels) and
 * on the reference backend; double backward through the fused ops against the compositions in
 * float64; and the fallbacks (operand quantizers, attention dropout) taking the composed path.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { grad, noGrad } from '../../autograd/engine.ts';
import { attentionComposed } from '../../autograd/transformer.ts';
import { availableBackends, withBackend, type BackendName } from '../../backend/index.ts';
import { profileOps } from '../../backend/registry.ts';
import { add, attention, concat, crossEntropy, div, erf, gelu, layerNorm, mean, mul, reshape, Rng, sqrt, sub, sum, Tensor } from '../../tensor/index.ts';
import { withFusedTransformerLayers } from '../fused-layers.ts';
import { Identity } from '../activation.ts';
import { TransformerBlock, TransformerLM, type TransformerActivation } from './transformer-lm.ts';

const [V, C, N] = [37, 7, 5];

function ids(rng: Rng, n: number, c: number): Tensor {
  return new Tensor(Int32Array.from({ length: n * c }, () => Math.floor(rng.uniform() * V)), [n, c]);
}

/** Runs `fn` with the fused Transformer layer primitives on or off. */
const withFused = withFusedTransformerLayers;

/** Logits [N, C, V] and every parameter's gradient of the every-position cross-entropy. */
function logitsAndGrads(model: TransformerLM, x: Tensor, targets: Tensor): { logits: Float32Array; grads: Map<string, Float64Array> } {
  model.zeroGrad();
  const logits = model.forwardAll(x);
  crossEntropy(reshape(logits, [x.size, V]), targets).backward();
  const grads = new Map<string, Float64Array>();
  for (const [name, p] of model.namedParameters()) grads.set(name, Float64Array.from(p.grad!.data));
  return { logits: Float32Array.from(logits.data), grads };
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

/** max |a − b| / max |b| (0 when b is all zeros and a equals it). */
function relativeDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  const scale = maxAbs(b);
  return scale === 0 ? d : d / scale;
}

const backends: BackendName[] = (['native', 'reference'] as const).filter((b) => availableBackends().includes(b));

describe('TransformerLM on the fused layer primitives', () => {
  for (const backend of backends) {
    for (const activation of ['gelu', 'gelu-tanh', 'relu'] as TransformerActivation[]) {
      it(`${backend}, ${activation}: logits and every parameter gradient equal the composed ops' (float32)`, () => {
        withBackend(backend, () => {
          const model = new TransformerLM({ vocabSize: V, maxContext: C, embedDim: 20, numHeads: 4, numLayers: 2, mlpDim: 36, activation, rng: new Rng(3) });
          // Larger embeddings than the init, so that attention and LayerNorm see spread-out inputs.
          for (const p of [model.tokenEmbedding.weight]) for (let i = 0; i < p.size; i++) p.data[i] = p.data[i]! * 40;
          model.train();
          const rng = new Rng(4);
          const x = ids(rng, N, C);
          const targets = new Tensor(Int32Array.from({ length: N * C }, () => Math.floor(rng.uniform() * V)), [N * C]);
          const fused = withFused(true, () => logitsAndGrads(model, x, targets));
          const composed = withFused(false, () => logitsAndGrads(model, x, targets));
          assert.ok(maxAbs(composed.logits) > 0.1, 'logits are not flat');
          const failures: string[] = [];
          const logitDiff = relativeDiff(fused.logits, composed.logits);
          if (!(logitDiff < 2e-6)) failures.push(`logits differ by ${logitDiff.toExponential(2)} of max |logit|`);
          for (const [name, g] of composed.grads) {
            const diff = relativeDiff(fused.grads.get(name)!, g);
            if (!(diff < 2e-5)) failures.push(`${name}: gradient differs by ${diff.toExponential(2)} of its max |g|`);
          }
          assert.deepEqual(failures, []);
          // The fused path really ran the fused primitives (and the composed one did not).
          const fusedOps = withFused(true, () => profileOps(() => logitsAndGrads(model, x, targets)));
          const composedOps = withFused(false, () => profileOps(() => logitsAndGrads(model, x, targets)));
          const ran = (p: typeof fusedOps, op: string): boolean => [...p.keys()].some((k) => k.endsWith(`/${op}`));
          for (const op of ['layerNorm', 'layerNormBackward', 'attention', 'attentionBackward']) {
            assert.ok(ran(fusedOps, op), `${op} did not run`);
            assert.ok(!ran(composedOps, op), `${op} ran on the composed path`);
          }
          assert.equal(ran(fusedOps, 'gelu'), activation !== 'relu');
          if (backend === 'native') {
            for (const op of ['layerNorm', 'attention', 'attentionBackward']) assert.ok(fusedOps.has(`native/${op}`), `${op} fell back to the reference kernel`);
          }
        });
      });
    }
  }

  it('double backward through gelu, layerNorm and attention equals the compositions (float64, reference)', () => {
    withBackend('reference', () => {
      const rng = new Rng(9);
      const r = (shape: number[], scale = 1): Tensor => new Tensor(Float64Array.from({ length: shape.reduce((p, d) => p * d, 1) }, () => scale * (2 * rng.uniform() - 1)), shape).requiresGrad_();
      const x = r([2, 5, 12], 2);
      const w = r([12]);
      const b = r([12]);
      const composedLayerNorm = (t: Tensor): Tensor => {
        const c = sub(t, mean(t, -1, true));
        return add(mul(div(c, sqrt(add(mean(mul(c, c), -1, true), 1e-5))), w), b);
      };
      const geluErf = (t: Tensor): Tensor => mul(mul(t, 0.5), add(erf(mul(t, Math.SQRT1_2)), 1));
      const f = (fused: boolean): Tensor => {
        const h = fused ? layerNorm(gelu(x), w, b) : composedLayerNorm(geluErf(x));
        const qkv = concat([h, mul(h, -0.5), add(mul(h, 1.3), 0.2)], 2); // [2, 5, 36]
        const y = fused ? attention(qkv, { heads: 3, causal: true }) : attentionComposed(qkv, { heads: 3, causal: true });
        return sum(mul(y, y));
      };
      const hvp = (fused: boolean): Float64Array[] => {
        const gs = grad(f(fused), [x, w], { createGraph: true });
        const second = grad(add(sum(mul(gs[0]!, gs[0]!)), sum(mul(gs[1]!, gs[1]!))), [x, w, b]);
        return [...gs.map((t) => Float64Array.from(t.data)), ...second.map((t) => Float64Array.from(t.data))];
      };
      const fused = hvp(true);
      const composed = hvp(false);
      fused.forEach((v, i) => {
        const diff = relativeDiff(v, composed[i]!);
        assert.ok(diff < 1e-9, `part ${i}: fused and composed differ by ${diff.toExponential(2)}`);
      });
    });
  });

  it('operand quantizers and attention dropout in training take the composed attention path', () => {
    const model = new TransformerLM({ vocabSize: V, maxContext: C, embedDim: 8, numHeads: 2, numLayers: 1, dropout: 0.1, rng: new Rng(5) });
    const x = ids(new Rng(6), 2, 4);
    const ran = (fn: () => void): boolean => [...profileOps(fn).keys()].some((k) => k.endsWith('/attention'));
    model.train();
    assert.equal(ran(() => noGrad(() => model.forwardAll(x))), false, 'dropout in training: composed');
    model.eval();
    assert.equal(ran(() => noGrad(() => model.forwardAll(x))), true, 'eval: fused');
    const block = model.blocks.children()[0];
    assert.ok(block instanceof TransformerBlock);
    block.attn.setOperandQuantizers({ query: new Identity() });
    assert.equal(ran(() => noGrad(() => model.forwardAll(x))), false, 'operand quantizers: composed');
  });
});
