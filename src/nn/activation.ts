import { add, erf, gelu, leakyRelu, mul, relu, relu6, sigmoid, tanh, type Tensor } from '../tensor/index.ts';
import { Module } from './module.ts';
import { fusedTransformerLayers } from './fused-layers.ts';

/** max(x, 0). */
export class ReLU extends Module {
  forward(x: Tensor): Tensor {
    return relu(x);
  }
}

/** min(max(x, 0), 6). */
export class ReLU6 extends Module {
  forward(x: Tensor): Tensor {
    return relu6(x);
  }
}

/** x for x > 0, negativeSlope·x otherwise (default slope 0.01). */
export class LeakyReLU extends Module {
  readonly negativeSlope: number;

  constructor(negativeSlope = 0.01) {
    super();
    this.negativeSlope = negativeSlope;
  }

  forward(x: Tensor): Tensor {
    return leakyRelu(x, this.negativeSlope);
  }

  override extraRepr(): string {
    return `negativeSlope=${this.negativeSlope}`;
  }
}

/** 1 / (1 + e^−x). */
export class Sigmoid extends Module {
  forward(x: Tensor): Tensor {
    return sigmoid(x);
  }
}

export class Tanh extends Module {
  forward(x: Tensor): Tensor {
    return tanh(x);
  }
}

/**
 * GELU: exact x·Φ(x) = ½x(1 + erf(x/√2)) (default), or with `approximate: 'tanh'`
 * ½x(1 + tanh(√(2/π)(x + 0.044715x³))).
 */
export class GELU extends Module {
  readonly approximate: 'none' | 'tanh';

  constructor(options: { approximate?: 'none' | 'tanh' } = {}) {
    super();
    this.approximate = options.approximate ?? 'none';
  }

  forward(x: Tensor): Tensor {
    if (fusedTransformerLayers()) return gelu(x, this.approximate);
    if (this.approximate === 'none') return mul(mul(x, 0.5), add(erf(mul(x, Math.SQRT1_2)), 1));
    const inner = mul(add(x, mul(mul(mul(x, x), x), 0.044715)), Math.sqrt(2 / Math.PI));
    return mul(mul(x, 0.5), add(tanh(inner), 1));
  }

  override extraRepr(): string {
    return this.approximate === 'none' ? '' : `approximate=${this.approximate}`;
  }
}

/** Returns its input unchanged (a placeholder, e.g. where BN was folded away). */
export class Identity extends Module {
  forward(x: Tensor): Tensor {
    return x;
  }
}
