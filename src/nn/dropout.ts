import { globalRng, mul, zeros, zerosLike, type Rng, type Tensor } from '../tensor/index.ts';
import { Module } from './module.ts';

/**
 * Inverted dropout: in training, each element is zeroed with probability `p` and the survivors
 * are scaled by 1/(1 − p), so the expected output equals the input; in eval, the identity.
 * Draws from `rng` (default: the global generator seeded by `manualSeed`).
 */
export class Dropout extends Module {
  readonly p: number;
  private readonly rng: Rng;

  constructor(p = 0.5, options: { rng?: Rng } = {}) {
    super();
    if (!(p >= 0 && p <= 1)) throw new Error(`Dropout: probability must be in [0, 1], got ${p}`);
    this.p = p;
    this.rng = options.rng ?? globalRng;
  }

  forward(x: Tensor): Tensor {
    if (!this.training || this.p === 0) return x;
    return invertedDropout(x, this.p, this.rng);
  }

  override extraRepr(): string {
    return `p=${this.p}`;
  }
}

/**
 * Inverted dropout applied unconditionally (the caller decides on training mode): each element
 * zeroed with probability `p` in [0, 1], the survivors scaled by 1/(1 − p); one draw from `rng`
 * per element (none when p = 1). Shared by Dropout, the RNN layers and MultiheadAttention.
 */
export function invertedDropout(x: Tensor, p: number, rng: Rng): Tensor {
  if (p === 1) return mul(x, zeros([], x.dtype));
  const mask = zerosLike(x);
  const keepScale = 1 / (1 - p);
  const data = mask.data;
  for (let i = 0; i < data.length; i++) data[i] = rng.uniform() < p ? 0 : keepScale;
  return mul(x, mask);
}
