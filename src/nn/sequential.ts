import type { Tensor } from '../tensor/index.ts';
import { Module, type TensorModule } from './module.ts';
import { forwardChain } from './fusion.ts';

/**
 * A chain of tensor-to-tensor modules named `0`, `1`, ...; `forward` feeds each one's output to
 * the next. Indexable with `at(i)` (negative counts from the end), iterable, growable by `append`.
 */
export class Sequential extends Module implements Iterable<TensorModule> {
  private readonly layers: TensorModule[] = [];

  constructor(...layers: TensorModule[]) {
    super();
    for (const layer of layers) this.append(layer);
  }

  /** Adds `layer` at the end under the next index; returns this. */
  append(layer: TensorModule): this {
    this.registerModule(String(this.layers.length), layer);
    this.layers.push(layer);
    return this;
  }

  get length(): number {
    return this.layers.length;
  }

  /** The layer at `index`; negative indices count from the end. Throws when out of range. */
  at(index: number): TensorModule {
    const i = index < 0 ? index + this.layers.length : index;
    const layer = this.layers[i];
    if (!layer) throw new Error(`Sequential index ${index} out of range (length ${this.layers.length})`);
    return layer;
  }

  [Symbol.iterator](): Iterator<TensorModule> {
    return this.layers[Symbol.iterator]();
  }

  /** Each layer's output feeds the next; conv–relu–pool runs fuse when no gradient is needed (`forwardChain`). */
  forward(x: Tensor): Tensor {
    return forwardChain(this.layers, x);
  }

  protected override childReplaced(name: string, module: Module): void {
    if (!isTensorModule(module)) throw new Error(`Sequential child '${name}' must have forward(x: Tensor): Tensor`);
    this.layers[Number(name)] = module;
  }
}

/** Runtime check that a module's forward takes a single argument (what Sequential chains). */
function isTensorModule(module: Module): module is TensorModule {
  return typeof module.forward === 'function' && module.forward.length === 1;
}
