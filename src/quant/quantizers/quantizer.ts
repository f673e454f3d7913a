import { Module } from '../../nn/module.ts';
import type { Tensor } from '../../tensor/tensor.ts';
import type { QParams } from '../core/qparams.ts';

/**
 * A serializable quantizer description: plain JSON, named by `kind` (the estimator) plus its
 * number format and hyper-parameters. Presets are objects of this type, combined by spread.
 */
export interface QuantizerSpec {
  /** Registered estimator name: 'ste', 'lsq', 'pact', 'dorefa', 'lqnet', 'noise', 'binary', 'ternary', ... */
  readonly kind: string;
  readonly bits: number;
  readonly [option: string]: unknown;
}

/** Where a quantizer sits: it decides defaults such as signedness and the channel axis. */
export interface QuantizerContext {
  readonly role: 'weight' | 'activation';
  /** Shape of the weight it quantizes (weights only), e.g. OIHW or [out, in]. */
  readonly shape?: readonly number[];
  /** Output-channel axis of that weight (0 for Conv2d and Linear). */
  readonly channelAxis?: number;
}

/** What `convert()` needs to turn a trained quantizer into integers. */
export type ExportedQuant =
  | { readonly type: 'affine'; readonly qparams: QParams }
  /** values {−α, +α} (per channel α), sign(0) = +1 */
  | { readonly type: 'binary'; readonly alpha: Float32Array; readonly axis: number | null }
  /** values {−α, 0, +α} */
  | { readonly type: 'ternary'; readonly alpha: Float32Array; readonly threshold: Float32Array; readonly axis: number | null }
  /**
   * Non-uniform levels (LQ-Nets, DoReFa weights): `levels` ascending, one row of L levels per
   * slice along `axis` (row-major [channels, L]; a single row when axis is null). A value is
   * encoded as the index of its nearest level; weights are encoded from the quantizer's eval output.
   */
  | { readonly type: 'codebook'; readonly levels: Float32Array; readonly axis: number | null };

/**
 * A fake-quantizer: a Module whose forward returns the quantized-then-dequantized tensor with an
 * estimator's gradient. Learnable quantizer state (LSQ step, PACT clip, LQ-Nets basis) is
 * registered as parameters; calibration state as buffers, so both live in `stateDict()`.
 */
export abstract class Quantizer extends Module {
  abstract readonly spec: QuantizerSpec;
  /** When false, forward is the identity (e.g. to measure the float model inside a QAT model). */
  fakeQuantEnabled = true;

  abstract override forward(x: Tensor): Tensor;

  /** The quantization of the current state, for conversion to an integer model. */
  abstract exportQuant(): ExportedQuant;

  /** Training-progress hook for annealed estimators (noise decay, EDE t/k, temperatures). */
  setProgress(_epoch: number, _totalEpochs: number): void {}
}

export type QuantizerFactory = (spec: QuantizerSpec, context: QuantizerContext) => Quantizer;

const factories = new Map<string, QuantizerFactory>();

/** Registers the factory of a quantizer kind; a duplicate kind throws. */
export function registerQuantizer(kind: string, factory: QuantizerFactory): void {
  if (factories.has(kind)) throw new Error(`quantizer kind '${kind}' is already registered`);
  factories.set(kind, factory);
}

/** Builds a quantizer from its spec; an unknown kind names the registered ones. */
export function createQuantizer(spec: QuantizerSpec, context: QuantizerContext): Quantizer {
  const factory = factories.get(spec.kind);
  if (!factory) throw new Error(`unknown quantizer kind '${spec.kind}' (known: ${[...factories.keys()].join(', ')})`);
  return factory(spec, context);
}

export function quantizerKinds(): string[] {
  return [...factories.keys()];
}
