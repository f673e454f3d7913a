import { reshape, type Tensor } from '../tensor/index.ts';
import { Module } from './module.ts';

/** Merges dims startDim..endDim into one (default: everything but the batch dim). */
export class Flatten extends Module {
  readonly startDim: number;
  readonly endDim: number;

  constructor(startDim = 1, endDim = -1) {
    super();
    this.startDim = startDim;
    this.endDim = endDim;
  }

  forward(x: Tensor): Tensor {
    const start = this.startDim < 0 ? this.startDim + x.rank : this.startDim;
    const end = this.endDim < 0 ? this.endDim + x.rank : this.endDim;
    if (start < 0 || end >= x.rank || start > end) {
      throw new Error(`Flatten(${this.startDim}, ${this.endDim}): invalid for input [${x.shape.join(', ')}]`);
    }
    let merged = 1;
    for (let d = start; d <= end; d++) merged *= x.shape[d]!;
    return reshape(x, [...x.shape.slice(0, start), merged, ...x.shape.slice(end + 1)]);
  }

  override extraRepr(): string {
    return `startDim=${this.startDim}, endDim=${this.endDim}`;
  }
}
