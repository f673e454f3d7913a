import { adaptiveAvgPool2d, avgPool2d, maxPool2d, pool2dAttrs, type Tensor } from '../tensor/index.ts';
import { Module } from './module.ts';

type Pair = number | readonly [number, number];

function pair(v: Pair): [number, number] {
  return typeof v === 'number' ? [v, v] : [v[0], v[1]];
}

export interface Pool2dLayerOptions {
  /** Default: the kernel size. */
  stride?: Pair;
  /** Implicit padding on both sides, at most half the kernel (default 0). */
  padding?: Pair;
}

abstract class Pool2d extends Module {
  readonly kernelSize: [number, number];
  readonly stride: [number, number];
  readonly padding: [number, number];

  constructor(kernelSize: Pair, options: Pool2dLayerOptions = {}) {
    super();
    // The op layer's checks, so the layer and maxPool2d / avgPool2d agree.
    const attrs = pool2dAttrs(kernelSize, options, this.constructor.name);
    this.kernelSize = [...attrs.kernel];
    this.stride = [...attrs.stride];
    this.padding = [...attrs.padding];
  }

  override extraRepr(): string {
    return `kernelSize=${this.kernelSize.join('x')}, stride=${this.stride.join('x')}, padding=${this.padding.join('x')}`;
  }
}

/** Max over each kH×kW window of NCHW input (padding counts as −∞). */
export class MaxPool2d extends Pool2d {
  forward(x: Tensor): Tensor {
    return maxPool2d(x, this.kernelSize, { stride: this.stride, padding: this.padding });
  }
}

/** Mean over each kH×kW window of NCHW input (padded cells count in the divisor). */
export class AvgPool2d extends Pool2d {
  forward(x: Tensor): Tensor {
    return avgPool2d(x, this.kernelSize, { stride: this.stride, padding: this.padding });
  }
}

/** Average pooling to a fixed output size (input sizes must be multiples of it; 1 always works). */
export class AdaptiveAvgPool2d extends Module {
  readonly outputSize: [number, number];

  constructor(outputSize: Pair) {
    super();
    this.outputSize = pair(outputSize);
  }

  forward(x: Tensor): Tensor {
    return adaptiveAvgPool2d(x, this.outputSize);
  }

  override extraRepr(): string {
    return `outputSize=${this.outputSize.join('x')}`;
  }
}
