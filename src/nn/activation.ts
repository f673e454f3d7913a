import { add, gelu, leakyRelu, mul, relu, relu6, sigmoid, tanh, type Tensor } from '../tensor/index.ts';
import { Module } from './module.ts';

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
    return gelu(x, this.approximate);
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
