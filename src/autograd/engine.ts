import type { Tensor } from '../tensor/tensor.ts';
import { gradientRule } from './gradients.ts';
import { add, mul, onesLike, zerosLike } from '../tensor/ops.ts';
import { isFreshWhole, recycle, trackAllocations } from '../backend/recycle.ts';

let gradEnabled = true;

/** Whether ops record the graph right now. */
export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs `fn` without recording any graph (inference, optimizer steps). */
export function noGrad<T>(fn: () => T): T {
  return withGradMode(false, fn);
}

/** Runs `fn` with grad mode set to `enabled`, restoring the previous mode afterwards. */
export function withGradMode<T>(enabled: boolean, fn: () => T): T {
  const previous = gradEnabled;
  gradEnabled = enabled;
  try {
    return fn();
  } finally {
    gradEnabled = previous;
  }
}

/** Tensors reachable from `roots` through recorded nodes, inputs before the tensors made from them. */
function topologicalOrder(roots: readonly Tensor[]): Tensor[] {
  const order: Tensor[] = [];
  const seen = new Set<Tensor>();
  // Iterative post-order DFS: deep graphs (long RNN unrolls) must not overflow the stack.
  const stack: { t: Tensor; next: number }[] = [];
  for (const root of roots) {
    if (seen.has(root)) continue;
    seen.add(root);
    stack.push({ t: root, next: 0 });
    while (stack.length > 0) {
      const top = stack[stack.length - 1]!;
      const inputs = top.t.node?.inputs ?? [];
      if (top.next < inputs.length) {
        const child = inputs[top.next++]!;
        if (child.requiresGrad && !seen.has(child)) {
          seen.add(child);
          stack.push({ t: child, next: 0 });
        }
      } else {
        order.push(top.t);
        stack.pop();
      }
    }
  }
  return order;
}

/**
 * Gradients of sum_i <roots[i], rootGrads[i]> with respect to every tensor in the graph.
 * With `createGraph`, the gradient computation is itself recorded (for double backward).
 */
function propagate(roots: readonly Tensor[], rootGrads: readonly Tensor[], createGraph: boolean, keep: ReadonlySet<Tensor> = new Set()): Map<Tensor, Tensor> {
  const grads = new Grads(!createGraph);
  roots.forEach((r, i) => grads.accumulate(r, rootGrads[i]!));
  const order = topologicalOrder(roots);
  trackAllocations(() => withGradMode(createGraph, () => {
    for (let i = order.length - 1; i >= 0; i--) {
      const t = order[i]!;
      const node = t.node;
      const g = grads.get(t);
      if (!node || !g) continue;
      const rule = gradientRule(node.op);
      const inputGrads = rule(g, node.inputs, t, node.attrs);
      node.inputs.forEach((input, k) => {
        if (!input.requiresGrad) return;
        const entry = inputGrads[k];
        const gi = typeof entry === 'function' ? entry() : entry;
        if (gi) grads.accumulate(input, gi);
      });
      // t's gradient has been consumed by its rule: nothing reads it again unless asked for.
      if (!keep.has(t)) grads.release(t);
      grads.flush();
    }
  }));
  return grads.map;
}

/**
 * The gradients of one backward pass, with the buffers they hold counted: a gradient that is
 * dropped (consumed by its node, or replaced by a sum) hands its buffer to backend/recycle.ts
 * when the buffer was allocated during this pass and no remaining gradient shares it. Buffers
 * dropped while a node's input gradients are being accumulated are handed over only after that
 * node (`flush`): until then the rule's outputs -- which may repeat one tensor for several
 * inputs -- are still being read.
 */
class Grads {
  readonly map = new Map<Tensor, Tensor>();
  private readonly holders = new Map<ArrayBufferLike, number>();
  private pending: Float32Array[] = [];

  constructor(private readonly recycling: boolean) {}

  get(t: Tensor): Tensor | undefined {
    return this.map.get(t);
  }

  accumulate(t: Tensor, g: Tensor): void {
    if (g.shape.length !== t.shape.length || g.shape.some((d, i) => d !== t.shape[i])) {
      throw new Error(`gradient shape [${g.shape.join(', ')}] does not match tensor shape [${t.shape.join(', ')}]`);
    }
    const prev = this.map.get(t);
    const next = prev ? add(prev, g) : g;
    this.hold(next);
    this.map.set(t, next);
    // prev is summed in. (g is not dropped: the rule may hand the same tensor to another input.)
    if (prev) this.drop(prev);
  }

  release(t: Tensor): void {
    const g = this.map.get(t);
    if (!g) return;
    this.map.delete(t);
    this.drop(g);
  }

  private hold(g: Tensor): void {
    if (!this.recycling) return;
    const buffer = g.data.buffer;
    this.holders.set(buffer, (this.holders.get(buffer) ?? 0) + 1);
  }

  private drop(g: Tensor): void {
    if (!this.recycling) return;
    const buffer = g.data.buffer;
    const left = (this.holders.get(buffer) ?? 1) - 1;
    if (left > 0) {
      this.holders.set(buffer, left);
      return;
    }
    this.holders.delete(buffer);
    if (isFreshWhole(g.data)) this.pending.push(g.data);
  }

  /** Recycles the buffers dropped since the last flush that no gradient has taken up again. */
  flush(): void {
    const seen = new Set<ArrayBufferLike>();
    for (const data of this.pending) {
      if (seen.has(data.buffer) || this.holders.has(data.buffer)) continue;
      seen.add(data.buffer);
      if (isFreshWhole(data)) recycle(data);
    }
    this.pending = [];
  }
}

/** Backpropagates from `root` and accumulates into the `.grad` of every leaf that requires it. */
export function backward(root: Tensor, grad?: Tensor, options: { createGraph?: boolean } = {}): void {
  if (!root.requiresGrad) throw new Error('backward() on a tensor that does not require grad (was it computed under noGrad, or from no parameter?)');
  if (!grad && root.size !== 1) throw new Error(`backward() without a gradient needs a scalar, got shape [${root.shape.join(', ')}]`);
  const createGraph = options.createGraph ?? false;
  const grads = propagate([root], [grad ?? onesLike(root)], createGraph);
  // Gradient rules pass a tensor through unchanged where they can (add gives its upstream gradient
  // to both inputs; the root's gradient may be the caller's `grad`): a leaf's new .grad that
  // overlaps another leaf's, or the caller's tensor, gets its own copy, so that editing one .grad
  // in place (clipping by hand, zeroing) changes nothing else.
  const taken: ArrayBufferView[] = grad ? [grad.data] : [];
  for (const [t, g] of grads) {
    if (t.node || !t.requiresGrad) continue;
    let leafGrad = createGraph ? g : g.detach();
    if (!t.grad) {
      // With createGraph the copy stays in the graph (a product by 1), for higher derivatives.
      if (taken.some((d) => overlaps(d, leafGrad.data))) leafGrad = createGraph ? withGradMode(true, () => mul(g, 1)) : leafGrad.clone();
      taken.push(leafGrad.data);
    }
    t.grad = t.grad ? withGradMode(createGraph, () => add(t.grad!, leafGrad)) : leafGrad;
  }
}

/** Whether two typed arrays share any bytes of memory. */
function overlaps(a: ArrayBufferView, b: ArrayBufferView): boolean {
  return a.buffer === b.buffer && a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength;
}

/**
 * Functional gradients (torch.autograd.grad): d(sum <outputs, gradOutputs>)/d(inputs), without
 * touching `.grad`. Inputs the outputs do not depend on get zeros.
 */
export function grad(
  outputs: Tensor | readonly Tensor[],
  inputs: readonly Tensor[],
  options: { gradOutputs?: readonly Tensor[]; createGraph?: boolean } = {},
): Tensor[] {
  const outs = Array.isArray(outputs) ? (outputs as readonly Tensor[]) : [outputs as Tensor];
  const gOuts = options.gradOutputs ?? outs.map((o) => onesLike(o));
  const grads = propagate(outs, gOuts, options.createGraph ?? false, new Set(inputs));
  return inputs.map((x) => grads.get(x) ?? zerosLike(x));
}
