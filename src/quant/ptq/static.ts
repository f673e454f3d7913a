/**
 * The post-training quantizer kind 'static': an affine fake quantizer whose scale and zero point
 * are fixed buffers, set once from an observer during calibration.
 *
 * States:
 *   - calibrating (`startCalibration()`): forward observes x and returns it unchanged (the float
 *     model runs, as in torch.ao's prepare → calibrate); weights are observed once per calibration;
 *   - frozen (`freeze()`, buffer `calibrated` = 1): forward is the affine fake quantization
 *     y = (clamp(roundHalfEven(x/s) + z, qmin, qmax) − z)·s with the stored (s, z)
 *     (gradient: straight-through inside the range, 0 outside — usable for QAT fine-tuning);
 *   - neither: a weight quantizer calibrates itself from the weight it sees (data-free), an
 *     activation quantizer throws (run `calibrate`).
 * The observer is transient; the buffers `scale`, `zeroPoint`, `calibrated` are the state (stateDict).
 *
 * Spec options: bits, signed, symmetric, granularity ('tensor' | 'channel' | 'group' with `axis`
 * and `groupSize`, weights only: one scale per run of groupSize indices along axis and per position
 * of the other dims — { granularity: 'group', axis: 1, groupSize: 32 } on a Linear [O, I] is one
 * scale per row and 32 inputs; weights default to per output channel, activations to per tensor), method ('minmax' | 'ema' | 'percentile' |
 * 'mse' | 'entropy', default 'minmax'), momentum (ema), percentile (default 99.99), bins
 * (histograms, default 2048), grid (mse, default 100).
 *
 * Per-channel bit widths (mixed-precision search, `channelBits`: one integer b_c in {0} ∪ [2, bits]
 * per output channel, signed symmetric per-channel weights only, max b_c = bits): channel c uses the
 * narrow range [−(2^(b_c−1)−1), 2^(b_c−1)−1] with the scale its observer picks for b_c bits:
 *   ŷ_c = s_c·clamp(roundHalfEven(x_c/s_c), −q_c, q_c),  q_c = 2^(b_c−1) − 1,
 * computed as the container-width fake quantization of clamp(x_c, −q_c·s_c, q_c·s_c) (gradient:
 * straight-through inside the channel's range, 0 outside). Exported at the container width
 * `bits`; every channel's integers lie in its own range. b_c = 0 prunes the channel: q_c = 0, so
 * ŷ_c = 0 exactly (gradient 0) and its scale stays the container width's; the layer holding the
 * quantizer also zeroes the channel's bias (see `QuantLayer.prunedChannels`), and `convert`
 * removes the channel.
 */
import { noGrad } from '../../autograd/engine.ts';
import { full, zeros, Tensor } from '../../tensor/tensor.ts';
import { clamp, neg } from '../../tensor/ops.ts';
import { fakeQuantize } from '../core/quantize.ts';
import { qRange, type QParams } from '../core/qparams.ts';
import { affineQParams, BaseQuantizer, choiceOption, numberOption, resolveFormat, toQuantSpec } from '../quantizers/common.ts';
import { quantizerKinds, registerQuantizer, type ExportedQuant, type QuantizerContext, type QuantizerSpec } from '../quantizers/quantizer.ts';
import { createObserver, OBSERVER_METHODS, type Observer, type ObserverMethod } from '../observers/index.ts';

export const STATIC_KIND = 'static';

export class StaticQuantizer extends BaseQuantizer {
  readonly method: ObserverMethod;
  readonly qmin: number;
  readonly qmax: number;
  readonly scale: Tensor;
  readonly zeroPoint: Tensor;
  /** 1 once the parameters are frozen from calibration. */
  readonly calibrated: Tensor;
  /** Per-channel bit widths (`channelBits`), or null when every channel uses `bits`. */
  readonly channelBits: Int32Array | null;
  private observer: Observer | null = null;
  private weightSeen = false;

  constructor(spec: QuantizerSpec, context: QuantizerContext) {
    const format = resolveFormat(spec, context, { group: true });
    super(spec, format);
    [this.qmin, this.qmax] = qRange(format);
    this.method = choiceOption(spec, 'method', OBSERVER_METHODS, 'minmax');
    this.scale = this.registerBuffer('scale', full([format.count], 1));
    this.zeroPoint = this.registerBuffer('zeroPoint', zeros([format.count]));
    this.calibrated = this.registerBuffer('calibrated', zeros([1]));
    this.channelBits = parseChannelBits(spec, format);
  }

  /** True between `startCalibration()` and `freeze()`. */
  get calibrating(): boolean {
    return this.observer !== null;
  }

  get isCalibrated(): boolean {
    return this.calibrated.data[0] === 1;
  }

  /** Starts a fresh observer: until `freeze()`, forward observes and passes x through. */
  startCalibration(): void {
    const spec = this.spec;
    this.observer = createObserver(this.method, {
      axis: this.format.axis,
      groupSize: this.format.groupSize,
      momentum: numberOption(spec, 'momentum', 0.1),
      percentile: numberOption(spec, 'percentile', 99.99),
      bins: numberOption(spec, 'bins', 2048),
      grid: numberOption(spec, 'grid', 100),
    });
    this.weightSeen = false;
  }

  /** Adds x to the observer's statistics (calibration only). */
  observe(x: Tensor): void {
    if (!this.observer) throw new Error(`quantizer '${this.spec.kind}': observe() outside calibration (call startCalibration() first)`);
    this.observer.observe(x);
  }

  /** Computes (s, z) from the observer, stores them and ends calibration. */
  freeze(): QParams {
    if (!this.observer) throw new Error(`quantizer '${this.spec.kind}': freeze() without calibration`);
    if (!this.observer.observed) throw new Error(`quantizer '${this.spec.kind}' (${this.role}) observed nothing during calibration: is its layer on the forward path?`);
    let qp = this.observer.qparams(toQuantSpec(this.format));
    if (this.channelBits) {
      // One observer answer per distinct width; channel c takes the scale of its own width.
      const scale = qp.scale.slice();
      for (const b of new Set(this.channelBits)) {
        if (b === this.format.bits || b === 0) continue; // a pruned channel keeps the container scale
        const narrow = this.observer.qparams({ ...toQuantSpec(this.format), bits: b });
        this.channelBits.forEach((bc, c) => {
          if (bc === b) scale[c] = narrow.scale[c]!;
        });
      }
      qp = { ...qp, scale };
    }
    this.setQParams(qp);
    this.observer = null;
    return qp;
  }

  /** Sets the frozen parameters directly (e.g. from another quantizer or a file). */
  setQParams(qp: Pick<QParams, 'scale' | 'zeroPoint'>): void {
    if (qp.scale.length !== this.format.count) throw new Error(`quantizer '${this.spec.kind}': ${qp.scale.length} scales for ${this.format.count} parameter sets`);
    this.scale.data.set(qp.scale);
    this.zeroPoint.data.set(qp.zeroPoint);
    this.calibrated.data[0] = 1;
  }

  protected quantize(x: Tensor): Tensor {
    if (this.observer) {
      if (this.role === 'activation' || !this.weightSeen) noGrad(() => this.observer!.observe(x));
      this.weightSeen = true;
      return x;
    }
    if (!this.isCalibrated) {
      if (this.role !== 'weight') throw new Error(`quantizer '${this.spec.kind}' (activation) is not calibrated: run calibrate() on the model first`);
      noGrad(() => {
        this.startCalibration();
        this.observe(x);
        this.freeze();
      });
    }
    const qp = this.qparams();
    if (!this.channelBits) return fakeQuantize(x, qp, { gradient: 'clipped' });
    const bound = new Float32Array(this.format.count);
    this.channelBits.forEach((b, c) => (bound[c] = b === 0 ? 0 : Math.fround((2 ** (b - 1) - 1) * qp.scale[c]!)));
    const shape = x.shape.map((d, i) => (i === this.format.axis ? d : 1));
    const hi = new Tensor(x.dtype === 'float64' ? Float64Array.from(bound) : bound, shape);
    return fakeQuantize(clamp(x, neg(hi), hi), qp, { gradient: 'clipped' });
  }

  /** The frozen affine parameters. */
  qparams(): QParams {
    return affineQParams(this.format, this.scale, this.zeroPoint, this.qmin, this.qmax);
  }

  exportQuant(): ExportedQuant {
    if (!this.isCalibrated) throw new Error(`quantizer '${this.spec.kind}' is not calibrated: run calibrate() before exporting`);
    return { type: 'affine', qparams: this.qparams() };
  }

  override extraRepr(): string {
    return `${super.extraRepr()}, method=${this.method}${this.isCalibrated ? '' : ', uncalibrated'}`;
  }
}

function parseChannelBits(spec: QuantizerSpec, format: { role: string; bits: number; signed: boolean; symmetric: boolean; granularity: string; count: number }): Int32Array | null {
  const v = spec['channelBits'];
  if (v === undefined) return null;
  const fail = (why: string): never => {
    throw new Error(`quantizer '${spec.kind}': channelBits ${why}`);
  };
  if (format.role !== 'weight' || !format.signed || !format.symmetric || format.granularity !== 'channel') fail('needs signed symmetric per-channel weights');
  if (!Array.isArray(v) || v.length !== format.count) fail(`must list one bit width per output channel (${format.count}), got ${JSON.stringify(v)}`);
  const bits = Int32Array.from(v as number[]);
  if ((v as unknown[]).some((b) => !Number.isInteger(b) || (b !== 0 && ((b as number) < 2 || (b as number) > format.bits)))) fail(`entries must be 0 (pruned) or integers in [2, ${format.bits}]`);
  if (Math.max(...bits) !== format.bits) fail(`must reach the container width bits = ${format.bits} in some channel`);
  return bits;
}

export function createStaticQuantizer(spec: QuantizerSpec, context: QuantizerContext): StaticQuantizer {
  return new StaticQuantizer(spec, context);
}

// Registered once per process; a second copy of this module (another URL) does not throw.
if (!quantizerKinds().includes(STATIC_KIND)) registerQuantizer(STATIC_KIND, createStaticQuantizer);
