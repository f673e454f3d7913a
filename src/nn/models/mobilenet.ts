import { chainReleasing, releaseIntermediates } from '../../autograd/release.ts';
import type { Tensor } from '../../tensor/index.ts';
import { Module, type TensorModule } from '../module.ts';
import { Sequential } from '../sequential.ts';
import { Conv2d } from '../conv.ts';
import { BatchNorm2d } from '../batchnorm.ts';
import { ReLU6 } from '../activation.ts';
import { AdaptiveAvgPool2d } from '../pooling.ts';
import { Flatten } from '../flatten.ts';
import { Linear } from '../linear.ts';
import { Add } from '../merge.ts';
import type { MergeModule } from './resnet.ts';

/** One stage of inverted residual blocks: MobileNetV2's (t, c, n, s) row. */
export interface MobileNetStage {
  /** Expansion ratio t of the 1×1 expand conv (1: no expand conv, as MobileNetV2's first stage). */
  readonly expand: number;
  /** Output channels c before the width multiplier. */
  readonly channels: number;
  /** Blocks n in the stage. */
  readonly blocks: number;
  /** Stride s of the stage's first block (1 or 2); the others have stride 1. */
  readonly stride: number;
}

export interface MobileNetOptions {
  /** Output classes (default 10). */
  numClasses?: number;
  /** Input channels (default 1, MNIST / Fashion-MNIST; 3 for 32×32×3 images). */
  inChannels?: number;
  /** Multiplies every width (stem, stages, head), rounded to a multiple of 4, at least 4 (default 1). */
  widthMultiplier?: number;
  /** Expansion ratio t of the default stages after the first (default 4; MobileNetV2 uses 6); ignored with `stages`. */
  expandRatio?: number;
  /** Stem conv3×3 width before the multiplier (default 16). */
  stemChannels?: number;
  /** Stem stride (default 2, as MobileNetV2: 28×28 → 14×14; 1 keeps the full resolution at four times the work). */
  stemStride?: number;
  /** The stages (default `mobilenetStages(expandRatio)`: 6 blocks, 16–64 channels, two stride-2 stages). */
  stages?: readonly MobileNetStage[];
  /** Width of the 1×1 conv–BN–ReLU6 head before pooling, before the multiplier (default 128; 0: no head conv). */
  headChannels?: number;
}

/**
 * The default stages for 28×28 inputs, (t, c, n, s) as in MobileNetV2's table 2 but narrower and
 * shallower: (1, 16, 1, 1), (t, 24, 2, 2), (t, 32, 2, 2), (t, 64, 1, 1) with t = `expandRatio`:
 * after the stride-2 stem 14×14 → 7×7 → 4×4, six inverted residual blocks, three of them with a
 * residual add.
 */
export function mobilenetStages(expandRatio = 4): MobileNetStage[] {
  return [
    { expand: 1, channels: 16, blocks: 1, stride: 1 },
    { expand: expandRatio, channels: 24, blocks: 2, stride: 2 },
    { expand: expandRatio, channels: 32, blocks: 2, stride: 2 },
    { expand: expandRatio, channels: 64, blocks: 1, stride: 1 },
  ];
}

/** A width times the multiplier, rounded to a multiple of 4 and at least 4. @internal */
export function scaledWidth(channels: number, multiplier: number): number {
  return Math.max(4, Math.round((channels * multiplier) / 4) * 4);
}

function positiveInteger(who: string, name: string, value: number): number {
  if (!Number.isInteger(value) || value < 1) throw new Error(`${who}: ${name} must be a positive integer, got ${value}`);
  return value;
}

/**
 * The inverted residual block of Sandler et al. 2018 ("MobileNetV2: Inverted Residuals and Linear
 * Bottlenecks"): `expand` conv1×1(in→in·t)–BN–ReLU6 (absent when t = 1), `depthwise`
 * conv3×3(groups = in·t, `stride`)–BN–ReLU6, `project` conv1×1(in·t→out)–BN with no activation (the
 * linear bottleneck), and `add` (nn.Add) of the input when the stride is 1 and in = out. Convs
 * have no bias (BN follows each). Children are registered in the order forward calls them.
 */
export class InvertedResidual extends Module {
  readonly expand: Sequential | null;
  readonly depthwise: Sequential;
  readonly project: Sequential;
  readonly add: MergeModule | null;

  constructor(inChannels: number, outChannels: number, stride: number, expandRatio: number) {
    super();
    positiveInteger('InvertedResidual', 'expandRatio', expandRatio);
    if (stride !== 1 && stride !== 2) throw new Error(`InvertedResidual: stride must be 1 or 2, got ${stride}`);
    const hidden = inChannels * expandRatio;
    this.expand = expandRatio === 1
      ? null
      : this.registerModule('expand', new Sequential(new Conv2d(inChannels, hidden, 1, { bias: false }), new BatchNorm2d(hidden), new ReLU6()));
    this.depthwise = this.registerModule('depthwise', new Sequential(
      new Conv2d(hidden, hidden, 3, { stride, padding: 1, groups: hidden, bias: false }), new BatchNorm2d(hidden), new ReLU6(),
    ));
    this.project = this.registerModule('project', new Sequential(new Conv2d(hidden, outChannels, 1, { bias: false }), new BatchNorm2d(outChannels)));
    this.add = stride === 1 && inChannels === outChannels ? this.registerModule('add', new Add()) : null;
  }

  /**
   * x [N, in, H, W] -> [N, out, H/stride, W/stride]. Under no-grad each intermediate's buffer goes
   * back to the pool (`releaseIntermediates`) once the next stage has read it.
   */
  forward(x: Tensor): Tensor {
    const e = this.expand ? this.expand.forward(x) : x;
    const d = this.depthwise.forward(e);
    releaseIntermediates([e], [x, d]);
    const y = this.project.forward(d);
    releaseIntermediates([d], [x, y]);
    if (!this.add) return y;
    const out = this.add.forward(y, x);
    releaseIntermediates([y], [x, out]);
    return out;
  }
}

/**
 * A small MobileNetV2-style network (Sandler et al. 2018) for 28×28×1 images (MNIST,
 * Fashion-MNIST), or 32×32×3 with `inChannels: 3`: `stem` conv3×3(in→16, stride 2)–BN–ReLU6,
 * `blocks` = the inverted residual blocks of `stages` (default `mobilenetStages(4)`), `head`
 * conv1×1(→128)–BN–ReLU6, global average pooling, flatten, `fc` Linear(→numClasses).
 * With the defaults it has 6 blocks (3 residual adds, 6 depthwise convs), 50,410 parameters
 * (BatchNorm included) and about 1.35 M multiply-accumulates per 28×28 image.
 * `widthMultiplier` scales every width (rounded to a multiple of 4), e.g. 0.25 for tests.
 * Depthwise 3×3 convs are `Conv2d` with groups = channels; residual sums are `nn.Add` modules,
 * so `convert` captures the blocks as an integer DAG, and ReLU6 becomes the clamp of the
 * requantized output range.
 */
export class MobileNet extends Module {
  readonly stem: Sequential;
  readonly blocks: Sequential;
  readonly head: Sequential | null;
  readonly pool: TensorModule;
  readonly flatten: TensorModule;
  readonly fc: TensorModule;

  constructor(options: MobileNetOptions = {}) {
    super();
    const who = 'MobileNet';
    const multiplier = options.widthMultiplier ?? 1;
    if (!(multiplier > 0) || !Number.isFinite(multiplier)) throw new Error(`${who}: widthMultiplier must be a positive number, got ${multiplier}`);
    const stages = options.stages ?? mobilenetStages(positiveInteger(who, 'expandRatio', options.expandRatio ?? 4));
    if (stages.length === 0) throw new Error(`${who}: stages must not be empty`);
    const stemStride = options.stemStride ?? 2;
    if (stemStride !== 1 && stemStride !== 2) throw new Error(`${who}: stemStride must be 1 or 2, got ${stemStride}`);
    const stemWidth = scaledWidth(positiveInteger(who, 'stemChannels', options.stemChannels ?? 16), multiplier);
    this.stem = this.registerModule('stem', new Sequential(
      new Conv2d(positiveInteger(who, 'inChannels', options.inChannels ?? 1), stemWidth, 3, { stride: stemStride, padding: 1, bias: false }),
      new BatchNorm2d(stemWidth), new ReLU6(),
    ));
    this.blocks = this.registerModule('blocks', new Sequential());
    let width = stemWidth;
    for (const stage of stages) {
      const out = scaledWidth(positiveInteger(who, 'stage channels', stage.channels), multiplier);
      for (let b = 0; b < positiveInteger(who, 'stage blocks', stage.blocks); b++) {
        this.blocks.append(new InvertedResidual(width, out, b === 0 ? stage.stride : 1, stage.expand));
        width = out;
      }
    }
    const headChannels = options.headChannels ?? 128;
    if (!Number.isInteger(headChannels) || headChannels < 0) throw new Error(`${who}: headChannels must be a non-negative integer, got ${headChannels}`);
    if (headChannels > 0) {
      const headWidth = scaledWidth(headChannels, multiplier);
      this.head = this.registerModule('head', new Sequential(new Conv2d(width, headWidth, 1, { bias: false }), new BatchNorm2d(headWidth), new ReLU6()));
      width = headWidth;
    } else {
      this.head = null;
    }
    this.pool = this.registerModule('pool', new AdaptiveAvgPool2d(1));
    this.flatten = this.registerModule('flatten', new Flatten());
    this.fc = this.registerModule('fc', new Linear(width, positiveInteger(who, 'numClasses', options.numClasses ?? 10)));
  }

  /**
   * The layers whose input can be negative (`SignedInputLayers` of quant/config): every expand
   * conv after the first block, and the head conv (or fc without one), read a linear bottleneck
   * (BatchNorm output or residual sum, no ReLU); a quantization plan gives them signed inputs.
   */
  signedInputLayers(): string[] {
    const names: string[] = [];
    for (const [i, block] of [...this.blocks].entries()) {
      if (i === 0) continue; // reads the stem's ReLU6
      const b = block as InvertedResidual;
      names.push(b.expand ? `blocks.${i}.expand.0` : `blocks.${i}.depthwise.0`);
    }
    names.push(this.head ? 'head.0' : 'fc');
    return names;
  }

  /**
   * x [N, in, H, W] -> logits [N, numClasses]. Block by block (as the Sequential would), so that
   * under no-grad each block's input buffer goes back to the pool once the next block has read it.
   */
  forward(x: Tensor): Tensor {
    let y = chainReleasing(this.blocks, this.stem.forward(x));
    if (this.head) {
      const h = this.head.forward(y);
      releaseIntermediates([y], [x, h]);
      y = h;
    }
    const pooled = this.pool.forward(y);
    releaseIntermediates([y], [x, pooled]);
    return this.fc.forward(this.flatten.forward(pooled));
  }
}

/** A MobileNetV2-style network (see `MobileNet`). */
export function mobilenet(options: MobileNetOptions = {}): MobileNet {
  return new MobileNet(options);
}
