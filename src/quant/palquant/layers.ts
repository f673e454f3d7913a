/**
 * PalQuant layers (Hu et al., "PalQuant: Accelerating High-precision Networks on Low-precision
 * Accelerators", ECCV 2022): a layer of the original network becomes G parallel low-precision
 * copies. With G groups, a Conv2d(Cin → Cout) becomes a grouped conv of G·Cin → G·Cout channels in
 * which group g (input channels g·Cin …, output channels g·Cout …) is an independent b-bit conv:
 *
 *   y_g = conv(q_a,g(x_g), q_w(W_g)) + b_g,   g = 0 … G − 1,   y = concat_g y_g
 *
 * q_w is one weight quantizer over the whole [G·Cout, Cin, kh, kw] weight (per output channel by
 * default, so every group has its own scales); q_a,g is group g's own activation quantizer (one
 * learned step per group). On a b-bit accelerator each group runs as one b-bit integer conv (see
 * ./integer.ts). The groups talk to each other only through the dense float first and last layers
 * and the optional `CyclicShuffle` modules.
 */
import { Module } from '../../nn/module.ts';
import { Conv2d } from '../../nn/conv.ts';
import { BatchNorm2d } from '../../nn/batchnorm.ts';
import type { Linear } from '../../nn/linear.ts';
import { add, concat, conv2d, relu, reshape, split, type Tensor } from '../../tensor/index.ts';
import '../quantizers/index.ts';
import { createQuantizer, Quantizer, type QuantizerSpec } from '../quantizers/quantizer.ts';
import { checkGroups, cyclicPermuteGroups } from './permute.ts';
import type { ConvGeometry } from '../../runtime/ops.ts';

/** Quantizer specs of a PalQuant layer. */
export interface PalQuantSpecs {
  /** Weight quantizer of the whole layer (e.g. `{ kind: 'lsq', bits: 2, signed: true, symmetric: false, granularity: 'channel' }`). */
  readonly weight: QuantizerSpec;
  /** Activation quantizer spec, instantiated once per group (e.g. `{ kind: 'lsq', bits: 2, signed: false }`). */
  readonly activation: QuantizerSpec;
}

function buildQuantizer(where: string, spec: QuantizerSpec, context: Parameters<typeof createQuantizer>[1]): Quantizer {
  let q: Quantizer;
  try {
    q = createQuantizer(spec, context);
  } catch (error) {
    throw new Error(`${where}: cannot build the ${context.role} quantizer from ${JSON.stringify(spec)}: ${(error as Error).message}`);
  }
  if (!(q instanceof Quantizer)) throw new Error(`${where}: the factory of kind '${spec.kind}' did not return a Quantizer`);
  return q;
}

/**
 * Geometry of a PalQuant layer as a grouped conv (a linear layer is a 1×1 conv on a 1×1 image): the
 * runtime's conv geometry for ONE group (`inChannels` / `outChannels` per group), with `groups` the
 * parallel groups G and `innerGroups` the conv groups inside one group (the original layer's
 * `groups`; 1 for linear).
 */
export interface PalQuantGeometry extends Omit<ConvGeometry, 'groups'> {
  /** Parallel groups G. */
  readonly groups: number;
  /** Conv groups inside one parallel group. */
  readonly innerGroups: number;
}

/** What PalQuantConv2d takes of a wide grouped conv (a Conv2d has all of it). */
export type GroupedConvSource = Pick<Conv2d, 'weight' | 'bias' | 'inChannels' | 'outChannels' | 'kernelSize' | 'stride' | 'padding' | 'dilation' | 'groups'>;

/** Common part of PalQuantConv2d and PalQuantLinear: G parallel fake-quantized groups. */
export abstract class PalQuantLayer extends Module {
  abstract readonly kind: 'conv2d' | 'linear';
  /** Parallel groups G. */
  readonly groups: number;
  /** Wide weight: [G·Cout, Cin/innerGroups, kh, kw] (conv) or [G·out, in] (linear); group g owns rows g·Cout … */
  readonly weight: Tensor;
  readonly bias: Tensor | null;
  readonly weightQuantizer: Quantizer;
  /** One activation quantizer per group (children `inputQuantizer0`, `inputQuantizer1`, …). */
  readonly inputQuantizers: readonly Quantizer[];

  constructor(where: string, groups: number, weight: Tensor, bias: Tensor | null, specs: PalQuantSpecs) {
    super();
    checkGroups(where, weight.shape[0]!, groups);
    this.groups = groups;
    this.weight = this.registerParameter('weight', weight);
    this.bias = bias ? this.registerParameter('bias', bias) : null;
    this.weightQuantizer = this.registerModule('weightQuantizer', buildQuantizer(where, specs.weight, { role: 'weight', shape: weight.shape, channelAxis: 0 }));
    const qs: Quantizer[] = [];
    for (let g = 0; g < groups; g++) qs.push(this.registerModule(`inputQuantizer${g}`, buildQuantizer(where, specs.activation, { role: 'activation' })));
    this.inputQuantizers = qs;
  }

  abstract geometry(): PalQuantGeometry;

  abstract override forward(x: Tensor): Tensor;

  /** x [N, G·Cin, ...] with group g fake-quantized by its own activation quantizer. */
  quantizeInput(x: Tensor): Tensor {
    const g = this.groups;
    const pass = (q: Quantizer, t: Tensor): Tensor => (q.fakeQuantEnabled ? q.forward(t) : t);
    if (g === 1) return pass(this.inputQuantizers[0]!, x);
    const parts = split(x, new Array<number>(g).fill(x.shape[1]! / g), 1);
    return concat(parts.map((p, i) => pass(this.inputQuantizers[i]!, p)), 1);
  }

  /** The weight fake-quantized (the float weight when the quantizer is disabled). */
  quantizedWeight(): Tensor {
    const q = this.weightQuantizer;
    return q.fakeQuantEnabled ? q.forward(this.weight) : this.weight;
  }

  override extraRepr(): string {
    const geo = this.geometry();
    return `groups=${this.groups}, perGroup=${geo.inChannels}->${geo.outChannels}, kernelSize=${geo.kernelSize.join('x')}`;
  }
}

/**
 * A Conv2d as G parallel fake-quantized groups (see the module comment). Built from a template
 * Conv2d(Cin, Cout) by `PalQuantConv2d.fromConv`, which creates the wide grouped weight
 * [G·Cout, Cin/innerGroups, kh, kw] with Conv2d's default initialisation.
 */
export class PalQuantConv2d extends PalQuantLayer {
  readonly kind = 'conv2d';
  private readonly geo: PalQuantGeometry;

  /** Wraps the wide grouped conv `wide` (a Conv2d or its fields; its groups must be a multiple of G; its weight and bias are kept). */
  constructor(wide: GroupedConvSource, groups: number, specs: PalQuantSpecs) {
    super('PalQuantConv2d', groups, wide.weight, wide.bias, specs);
    if (wide.groups % groups !== 0 || wide.inChannels % groups !== 0) {
      throw new Error(`PalQuantConv2d: a conv with ${wide.inChannels} input channels and groups=${wide.groups} does not split into ${groups} parallel groups`);
    }
    const expected = [wide.outChannels, wide.inChannels / wide.groups, ...wide.kernelSize];
    if (wide.weight.rank !== 4 || wide.weight.shape.some((d, i) => d !== expected[i])) {
      throw new Error(`PalQuantConv2d: weight [${wide.weight.shape.join(', ')}] does not match the geometry [${expected.join(', ')}]`);
    }
    this.geo = {
      groups, inChannels: wide.inChannels / groups, outChannels: wide.outChannels / groups, kernelSize: [...wide.kernelSize],
      stride: [...wide.stride], padding: [...wide.padding], dilation: [...wide.dilation], innerGroups: wide.groups / groups,
    };
  }

  /** G parallel copies of `template`'s geometry (fresh weights; the template is not changed). */
  static fromConv(template: Conv2d, groups: number, specs: PalQuantSpecs): PalQuantConv2d {
    checkGroups('PalQuantConv2d.fromConv', template.outChannels * Math.max(1, groups), groups);
    const wide = new Conv2d(template.inChannels * groups, template.outChannels * groups, template.kernelSize, {
      stride: template.stride, padding: template.padding, dilation: template.dilation,
      groups: template.groups * groups, bias: template.bias !== null,
    });
    return new PalQuantConv2d(wide, groups, specs);
  }

  geometry(): PalQuantGeometry {
    return this.geo;
  }

  /** x [N, G·Cin, H, W] -> [N, G·Cout, OH, OW]. */
  forward(x: Tensor): Tensor {
    const geo = this.geo;
    if (x.rank !== 4 || x.shape[1] !== geo.inChannels * this.groups) {
      throw new Error(`PalQuantConv2d(${this.groups}x ${geo.inChannels}->${geo.outChannels}): expected input [N, ${geo.inChannels * this.groups}, H, W], got [${x.shape.join(', ')}]`);
    }
    return conv2d(this.quantizeInput(x), this.quantizedWeight(), this.bias, {
      stride: geo.stride, padding: geo.padding, dilation: geo.dilation, groups: this.groups * geo.innerGroups,
    });
  }
}

/**
 * A Linear as G parallel fake-quantized groups: x [N, G·in] -> [N, G·out], group g computing
 * q_a,g(x_g)·q_w(W_g)ᵀ + b_g with W_g rows g·out … of the [G·out, in] weight. Computed as a
 * grouped 1×1 conv. Initialised as Linear (kaiming-uniform, a = √5, fan-in = in).
 */
export class PalQuantLinear extends PalQuantLayer {
  readonly kind = 'linear';
  readonly inFeatures: number;
  readonly outFeatures: number;

  /** Wraps a wide weight [G·out, in] (group g owns rows g·out …) and bias [G·out] or null; both are kept. */
  constructor(weight: Tensor, bias: Tensor | null, groups: number, specs: PalQuantSpecs) {
    if (weight.rank !== 2) throw new Error(`PalQuantLinear: expected a [G·out, in] weight, got [${weight.shape.join(', ')}]`);
    super('PalQuantLinear', groups, weight, bias, specs);
    if (bias && (bias.rank !== 1 || bias.shape[0] !== weight.shape[0])) throw new Error(`PalQuantLinear: bias [${bias.shape.join(', ')}] does not match ${weight.shape[0]} outputs`);
    this.inFeatures = weight.shape[1]!;
    this.outFeatures = weight.shape[0]! / groups;
  }

  /** G parallel copies of `template`'s shape, initialised as Linear (kaiming-uniform a = √5, fan-in = in); the template is not changed. */
  static fromLinear(template: Linear, groups: number, specs: PalQuantSpecs): PalQuantLinear {
    checkGroups('PalQuantLinear.fromLinear', template.outFeatures * Math.max(1, groups), groups);
    // A grouped 1×1 conv has the template's fan-in, so it initialises as G independent Linear layers.
    const wide = new Conv2d(template.inFeatures * groups, template.outFeatures * groups, 1, { groups, bias: template.bias !== null });
    return new PalQuantLinear(reshape(wide.weight, [template.outFeatures * groups, template.inFeatures]).detach(), wide.bias, groups, specs);
  }

  geometry(): PalQuantGeometry {
    return { groups: this.groups, inChannels: this.inFeatures, outChannels: this.outFeatures, kernelSize: [1, 1], stride: [1, 1], padding: [0, 0], dilation: [1, 1], innerGroups: 1 };
  }

  /** x [N, G·in] -> [N, G·out]. */
  forward(x: Tensor): Tensor {
    const g = this.groups;
    if (x.rank !== 2 || x.shape[1] !== this.inFeatures * g) {
      throw new Error(`PalQuantLinear(${g}x ${this.inFeatures}->${this.outFeatures}): expected input [N, ${this.inFeatures * g}], got [${x.shape.join(', ')}]`);
    }
    const n = x.shape[0]!;
    const xq = reshape(this.quantizeInput(x), [n, this.inFeatures * g, 1, 1]);
    const w = reshape(this.quantizedWeight(), [this.outFeatures * g, this.inFeatures, 1, 1]);
    return reshape(conv2d(xq, w, this.bias, { groups: g }), [n, this.outFeatures * g]);
  }
}

/**
 * PalQuant's cyclic shuffle module (§3.3): a residual block that lets group g read group g + 1,
 *   y = x + relu(bn(conv1x1_G(P·x))),
 * with P the cyclic group permutation by `shift` (output group g = input group (g + shift) mod G,
 * see ./permute.ts) and conv1x1_G a PalQuantConv2d (C/G → C/G per group, no bias) followed by
 * BatchNorm2d(C). Output group g then depends on input groups g and g + shift; after G − 1 such
 * modules (interleaved with grouped layers) every group depends on every group.
 */
export class CyclicShuffle extends Module {
  readonly groups: number;
  readonly channels: number;
  readonly shift: number;
  readonly conv: PalQuantConv2d;
  readonly bn: BatchNorm2d;

  constructor(channels: number, groups: number, specs: PalQuantSpecs, shift = 1) {
    super();
    checkGroups('CyclicShuffle', channels, groups);
    if (!Number.isInteger(shift) || (groups > 1 && shift % groups === 0)) throw new Error(`CyclicShuffle: shift must be an integer that is not a multiple of groups ${groups}, got ${String(shift)}`);
    this.groups = groups;
    this.channels = channels;
    this.shift = shift;
    const m = channels / groups;
    this.conv = this.registerModule('conv', PalQuantConv2d.fromConv(new Conv2d(m, m, 1, { bias: false }), groups, specs));
    this.bn = this.registerModule('bn', new BatchNorm2d(channels));
  }

  /** x [N, C, H, W] -> [N, C, H, W]. */
  forward(x: Tensor): Tensor {
    if (x.rank !== 4 || x.shape[1] !== this.channels) throw new Error(`CyclicShuffle(${this.channels}, groups=${this.groups}): expected input [N, ${this.channels}, H, W], got [${x.shape.join(', ')}]`);
    return add(x, relu(this.bn.forward(this.conv.forward(cyclicPermuteGroups(x, this.groups, this.shift)))));
  }

  override extraRepr(): string {
    return `channels=${this.channels}, groups=${this.groups}, shift=${this.shift}`;
  }
}
