import { noGrad } from '../../autograd/engine.ts';
import { roundHalfEven } from '../../backend/reference/elementwise.ts';
import { add, clamp, div, maximum, neg, sub, zerosLike } from '../../tensor/ops.ts';
import { full, zeros } from '../../tensor/tensor.ts';
import type { Tensor } from '../../tensor/tensor.ts';
import { fakeQuantize, roundSte, scaleGrad } from '../core/quantize.ts';
import { qRange, rangesOf, type QParams } from '../core/qparams.ts';
import type { ExportedQuant, QuantizerContext, QuantizerSpec } from './quantizer.ts';
import { BaseQuantizer, broadcastParamShape, meanAbsPerChannel, paramFor, resolveFormat, toQuantSpec } from './common.ts';

/** Smallest step the forward uses (keeps x/s finite if an optimizer drives s through zero). */
const MIN_STEP = 1e-8;

/**
 * Learned step size quantization — LSQ (Esser et al., "Learned Step Size Quantization", ICLR 2020)
 * and, for kind 'lsqPlus', LSQ+ (Bhalgat et al., CVPRW 2020) with a learned offset.
 *
 * Forward (z = 0 for LSQ):
 *   ŷ = (clamp(roundHalfEven(x/s) + z, qmin, qmax) − z)·s
 * with s a parameter (one per output channel for weights, one per tensor for activations),
 * initialised on the first batch to s₀ = 2·mean|x|/√qmax (per channel for weights).
 * LSQ+: a learned offset β (parameter "offset", ŷ ≈ x quantized on the grid β + s·ℤ) is applied as
 * the integer zero point z = clamp(round(−β/s), qmin, qmax) so the forward stays an exact affine
 * quantizer (β is effectively snapped to the grid; its update is continuous). LSQ+ initialises
 * from min-max (range widened to contain 0): s₀ = (max − min)/(qmax − qmin), β₀ = min − s₀·qmin.
 *
 * Gradients, with g = 1/√(N·qmax) (N = elements per channel for weights — per tensor when
 * per-tensor — and features per sample, size/batch, for activations) applied by `scaleGrad`:
 *   ∂ŷ/∂x = 1 inside the range (qmin ≤ round(x/s) + z ≤ qmax), else 0;
 *   ∂ŷ/∂s = g·(round(x/s) − x/s) inside, g·(q − z) outside (qmin − z or qmax − z);
 *   ∂ŷ/∂β = g·1 outside, 0 inside (LSQ+; through z = round(−β/sg(s)) with the STE).
 *
 * Spec options: bits, signed, symmetric (signed narrow range when true), granularity
 * ('channel' | 'tensor' for weights). Ranges: weights [−(2^(b−1)−1), 2^(b−1)−1] by default,
 * activations [0, 2^b − 1] (or signed with `signed: true`).
 */
export class LsqQuantizer extends BaseQuantizer {
  readonly plus: boolean;
  readonly qmin: number;
  readonly qmax: number;
  /** Learned step s, [count]. */
  readonly step: Tensor;
  /** Learned offset β, [count] (LSQ+ only). */
  readonly offset: Tensor | null;
  /** 1 once s (and β) were initialised from data. */
  readonly initialized: Tensor;

  constructor(spec: QuantizerSpec, context: QuantizerContext) {
    const format = resolveFormat(spec, context);
    super(spec, format);
    this.plus = spec.kind === 'lsqPlus';
    [this.qmin, this.qmax] = qRange(format);
    if (this.qmax < 1) throw new Error(`quantizer '${spec.kind}': empty positive range`);
    this.step = this.registerParameter('step', full([format.count], 1));
    this.offset = this.plus ? this.registerParameter('offset', zeros([format.count])) : null;
    this.initialized = this.registerBuffer('initialized', zeros([1]));
  }

  /** g = 1/√(N·qmax) for an input shaped like x. */
  gradScale(x: Tensor): number {
    const n = this.role === 'weight' ? x.size / this.format.count : x.rank >= 2 ? x.size / x.shape[0]! : x.size;
    return 1 / Math.sqrt(n * this.qmax);
  }

  /** Initialises s (and β) from x: LSQ's 2·mean|x|/√qmax, LSQ+'s min-max. Called by the first forward. */
  initializeFrom(x: Tensor): void {
    const axis = this.format.axis;
    if (this.plus) {
      const { min, max } = rangesOf(x.data, x.shape, toQuantSpec(this.format));
      for (let c = 0; c < this.format.count; c++) {
        // Widened to contain 0 so that the zero point lies in [qmin, qmax].
        const lo = Math.min(min[c]!, 0);
        const hi = Math.max(max[c]!, 0);
        const s = Math.max((hi - lo) / (this.qmax - this.qmin), MIN_STEP);
        this.step.data[c] = s;
        this.offset!.data[c] = lo - s * this.qmin;
      }
    } else {
      const m = meanAbsPerChannel(x, axis);
      for (let c = 0; c < this.format.count; c++) this.step.data[c] = Math.max((2 * m[c]!) / Math.sqrt(this.qmax), MIN_STEP);
    }
    this.initialized.data[0] = 1;
  }

  protected quantize(x: Tensor): Tensor {
    if (this.initialized.data[0] === 0) noGrad(() => this.initializeFrom(x));
    return this.lsqPath(x);
  }

  /**
   * The LSQ fake quantization with its gradients (also the base of the noise quantizer). The step's
   * gradient scale g is applied by the fakeQuantize op itself (`scaleGradFactor`), which is the
   * step's only consumer that passes a gradient: the same as scaleGrad(step, g) before it.
   */
  protected lsqPath(x: Tensor): Tensor {
    const g = this.gradScale(x);
    const axis = this.format.axis;
    const learned = paramFor(this.step, x, axis);
    // The forward uses max(s, MIN_STEP), the identity while every step exceeds MIN_STEP, as it
    // does in normal training (then nothing extra is recorded). A step an optimizer drove to or
    // through zero gets the floor's value with a straight-through gradient: the LSQ step gradient
    // (taken at MIN_STEP) still reaches s, so the step can grow back. A plain max() would give it
    // zero gradient for good: every weight then quantizes to ~0 and training is stuck at chance.
    const s = allAbove(this.step.data, MIN_STEP) ? learned : add(learned, sub(maximum(learned, MIN_STEP), learned).detach());
    let z: Tensor;
    if (this.offset) {
      const beta = paramFor(scaleGrad(this.offset, g), x, axis);
      z = clamp(roundSte(div(neg(beta), s.detach())), this.qmin, this.qmax);
    } else {
      z = this.zeroPointLike(s);
    }
    return fakeQuantize(x, { scale: s, zeroPoint: z, qmin: this.qmin, qmax: this.qmax }, { gradient: 'clipped', scaleGradFactor: g });
  }

  /** A zero tensor shaped and typed like `s`, kept between steps (kernels never write their inputs). */
  private zeroPointLike(s: Tensor): Tensor {
    const cached = this.zeroPointCache;
    if (cached && cached.dtype === s.dtype && cached.rank === s.rank && cached.shape.every((d, i) => d === s.shape[i])) return cached;
    this.zeroPointCache = zerosLike(s);
    return this.zeroPointCache;
  }

  private zeroPointCache: Tensor | null = null;

  /** The affine parameters of the current state (z from β for LSQ+). */
  qparams(): QParams {
    const count = this.format.count;
    const scale = new Float32Array(count);
    const zeroPoint = new Int32Array(count);
    for (let c = 0; c < count; c++) {
      const s = Math.max(this.step.data[c]!, MIN_STEP);
      scale[c] = s;
      if (this.offset) zeroPoint[c] = Math.min(this.qmax, Math.max(this.qmin, roundHalfEven(-this.offset.data[c]! / Math.fround(s))));
    }
    return { scale, zeroPoint, bits: this.format.bits, qmin: this.qmin, qmax: this.qmax, axis: this.format.axis, groupSize: null };
  }

  exportQuant(): ExportedQuant {
    if (this.initialized.data[0] === 0) throw new Error(`quantizer '${this.spec.kind}' is not initialised: run a forward pass first`);
    return { type: 'affine', qparams: this.qparams() };
  }

  /** Shape a [count] parameter takes against x (for callers composing with the step). */
  paramShape(x: Tensor): number[] {
    return broadcastParamShape(x.shape, this.format.axis);
  }
}

/** True when every value exceeds `bound` (false for NaN). */
function allAbove(values: ArrayLike<number>, bound: number): boolean {
  for (let i = 0; i < values.length; i++) if (!(values[i]! > bound)) return false;
  return true;
}

export function createLsqQuantizer(spec: QuantizerSpec, context: QuantizerContext): LsqQuantizer {
  return new LsqQuantizer(spec, context);
}
