/**
 * @internal Test helpers: a TransformerLM whose every parameter is float64 (nn.Linear, nn.Embedding
 * and nn.LayerNorm hold float32 tables), for float64 references and gradient checks.
 */
import { add, gather, linear, mul, Rng, Tensor } from '../../tensor/index.ts';
import { Embedding } from '../embedding.ts';
import { LayerNorm } from '../layernorm.ts';
import { Linear } from '../linear.ts';
import { Module } from '../module.ts';
import { TransformerLM, type TransformerLMOptions } from './transformer-lm.ts';

/** @internal A float64 copy of `t` (plus `jitter`·U(−1, 1) per element from `rng`). */
function float64Of(t: Tensor, rng: Rng, jitter: number): Tensor {
  const data = Float64Array.from(t.data, (v) => v + jitter * (2 * rng.uniform() - 1));
  return new Tensor(data, t.shape);
}

/** @internal y = x·Wᵀ + b in float64. */
export class Linear64 extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor | null;
  constructor(source: Linear, rng: Rng) {
    super();
    this.weight = this.registerParameter('weight', float64Of(source.weight, rng, 0));
    this.bias = source.bias ? this.registerParameter('bias', float64Of(source.bias, rng, 0.1)) : null;
  }
  forward(x: Tensor): Tensor {
    return linear(x, this.weight, this.bias);
  }
}

/** @internal A float64 embedding table (rows picked by int32 ids). */
export class Embedding64 extends Module {
  readonly weight: Tensor;
  constructor(source: Embedding, rng: Rng, scale: number) {
    super();
    // The model's init is tiny (N(0, 0.02²)); larger entries make position and word matter in a test.
    this.weight = this.registerParameter('weight', float64Of(source.weight, rng, scale));
  }
  forward(ids: Tensor): Tensor {
    return gather(this.weight, ids, 0);
  }
}

/** @internal A LayerNorm with a float64 weight and bias (values 1 ± 0.2 and ± 0.1 from `rng`). */
export class LayerNorm64 extends Module {
  readonly inner: LayerNorm;
  constructor(size: number, rng: Rng) {
    super();
    this.inner = this.registerModule('inner', new LayerNorm(size, { elementwiseAffine: false }));
    const w = new Float64Array(size).map(() => 1 + 0.2 * (2 * rng.uniform() - 1));
    const b = new Float64Array(size).map(() => 0.1 * (2 * rng.uniform() - 1));
    this.registerParameter('weight', new Tensor(w, [size]));
    this.registerParameter('bias', new Tensor(b, [size]));
  }
  forward(x: Tensor): Tensor {
    const [w, b] = this.parameters({ recurse: false }) as [Tensor, Tensor];
    return add(mul(this.inner.forward(x), w), b);
  }
}

/**
 * @internal A TransformerLM of `options` with every Linear, Embedding and LayerNorm swapped for a
 * float64 one (same names: `model.stateDict()` keys keep their prefixes; LayerNorms gain `.inner`).
 */
export function float64TransformerLM(options: TransformerLMOptions, seed: number): TransformerLM {
  const rng = new Rng(seed);
  const model = new TransformerLM({ ...options, rng: new Rng(seed + 1) });
  for (const [name, m] of model.namedModules()) {
    if (name === '') continue;
    if (m instanceof Linear) model.setSubmodule(name, new Linear64(m, rng));
    else if (m instanceof Embedding) model.setSubmodule(name, new Embedding64(m, rng, 0.5));
    else if (m instanceof LayerNorm) model.setSubmodule(name, new LayerNorm64(m.normalizedShape[0]!, rng));
  }
  return model;
}
