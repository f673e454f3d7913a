import { add, neg, relu, sub, type Tensor } from '../../tensor/index.ts';
import { Module, type TensorModule } from '../module.ts';
import { Sequential } from '../sequential.ts';
import { Conv2d } from '../conv.ts';
import { BatchNorm2d } from '../batchnorm.ts';
import { Identity } from '../activation.ts';
import { AdaptiveAvgPool2d, AvgPool2d } from '../pooling.ts';
import { Flatten } from '../flatten.ts';
import { Linear } from '../linear.ts';
import { Add } from '../merge.ts';
import { resnetStages, type MergeModule } from './resnet.ts';

/**
 * clip(x, −1, 1) (hard tanh): the real-valued stand-in of sign in Bi-Real Net's first training
 * stage. Gradient 1 on [−1, 1], 0 outside. sign(clip(x)) = sign(x), so keeping it in a binarized
 * model changes neither its forward nor (with the 'clipped' or 'approxSign' sign estimators,
 * which are 0 outside [−1, 1] already) its gradient.
 * Computed as x − relu(x − 1) + relu(−x − 1) (exact on [−1, 1], ±1 outside up to rounding of
 * x ∓ 1): elementwise ops the native backend runs, ~10× faster in training than `clamp`'s
 * where/greater (forward + backward on [64, 16, 28, 28]: 20–52 ms vs 400–480 ms, shared machine).
 */
export class SignClip extends Module {
  forward(x: Tensor): Tensor {
    return add(sub(x, relu(sub(x, 1))), relu(sub(neg(x), 1)));
  }
}

/** Where the real-valued shortcuts of a binary ResNet block go. */
export type BiRealShortcut =
  /** Bi-Real Net: one shortcut around every 3×3 conv (two per block, "double residual"). */
  | 'double'
  /** The standard basic block: one shortcut around the pair of convs. */
  | 'block';

/** The shortcut of a block that changes resolution or width. */
export type BiRealDownsample =
  /** Bi-Real Net's: 2×2 average pooling (stride 2), then a 1×1 conv (stride 1) and BatchNorm. */
  | 'real'
  /** The standard ResNet projection: a 1×1 conv with stride 2, then BatchNorm. */
  | 'projection';

export interface BiRealBlockOptions {
  /** Default 'double'. */
  shortcut?: BiRealShortcut;
  /** Default 'real'. */
  downsample?: BiRealDownsample;
  /** Clip (SignClip) before each 3×3 conv, for real-valued pretraining (default false: Identity). */
  clip?: boolean;
}

/**
 * A basic block for binary networks, after Liu et al. 2018 ("Bi-Real Net: Enhancing the
 * Performance of 1-bit CNNs With Improved Representational Capability and Advanced Training
 * Algorithm"). No ReLU: the nonlinearity is the sign that binarization (prepareQat with sign
 * input quantizers) puts at each 3×3 conv's input; the residual stream between convs stays real.
 *
 * - 'double': y1 = BN1(conv1(a1(x))) + down(x);  y = BN2(conv2(a2(y1))) + y1
 * - 'block':  h = BN1(conv1(a1(x)));             y = BN2(conv2(a2(h))) + down(x)
 *
 * a1, a2 are SignClip with `clip`, Identity otherwise; down(x) is x, or (when the stride or the
 * width changes) the 'real' AvgPool2d(2)–conv1×1–BN or the 'projection' conv1×1(stride 2)–BN.
 * Children: `act1`, `main1` (conv–BN), `downsample` (or null), `add1` ('double' only), `act2`,
 * `main2` (conv–BN), `add2`. The 3×3 convs are `main1.0` and `main2.0`, the downsampling conv is
 * `downsample.0` ('projection') or `downsample.1` ('real'): the names a quantization plan matches.
 */
export class BiRealBlock extends Module {
  readonly shortcutMode: BiRealShortcut;
  readonly downsampleMode: BiRealDownsample;
  readonly act1: TensorModule;
  readonly main1: Sequential;
  readonly downsample: Sequential | null;
  readonly add1: MergeModule | null;
  readonly act2: TensorModule;
  readonly main2: Sequential;
  readonly add2: MergeModule;

  constructor(inChannels: number, outChannels: number, stride = 1, options: BiRealBlockOptions = {}) {
    super();
    this.shortcutMode = checkChoice('shortcut', options.shortcut ?? 'double', ['double', 'block']);
    const downsample = checkChoice('downsample', options.downsample ?? 'real', ['real', 'projection']);
    this.downsampleMode = downsample;
    if (stride !== 1 && stride !== 2) throw new Error(`BiRealBlock: stride must be 1 or 2, got ${stride}`);
    const activation = (): TensorModule => (options.clip ? new SignClip() : new Identity());
    this.act1 = this.registerModule('act1', activation());
    this.main1 = this.registerModule('main1', new Sequential(
      new Conv2d(inChannels, outChannels, 3, { stride, padding: 1, bias: false }), new BatchNorm2d(outChannels),
    ));
    let down: Sequential | null = null;
    if (stride !== 1 || inChannels !== outChannels) {
      down = downsample === 'real'
        ? new Sequential(...(stride === 2 ? [new AvgPool2d(2)] : [new Identity()]), new Conv2d(inChannels, outChannels, 1, { bias: false }), new BatchNorm2d(outChannels))
        : new Sequential(new Conv2d(inChannels, outChannels, 1, { stride, bias: false }), new BatchNorm2d(outChannels));
    }
    this.downsample = down === null ? null : this.registerModule('downsample', down);
    this.add1 = this.shortcutMode === 'double' ? this.registerModule('add1', new Add()) : null;
    this.act2 = this.registerModule('act2', activation());
    this.main2 = this.registerModule('main2', new Sequential(
      new Conv2d(outChannels, outChannels, 3, { padding: 1, bias: false }), new BatchNorm2d(outChannels),
    ));
    this.add2 = this.registerModule('add2', new Add());
  }

  /** x [N, in, H, W] -> [N, out, H/stride, W/stride]. */
  forward(x: Tensor): Tensor {
    const h = this.main1.forward(this.act1.forward(x));
    const s = this.downsample ? this.downsample.forward(x) : x;
    if (this.add1 !== null) {
      const y1 = this.add1.forward(h, s);
      return this.add2.forward(this.main2.forward(this.act2.forward(y1)), y1);
    }
    return this.add2.forward(this.main2.forward(this.act2.forward(h)), s);
  }
}

export interface BiRealResNetOptions extends BiRealBlockOptions {
  /** Output classes (default 10). */
  numClasses?: number;
  /** Input channels (default 1, MNIST / Fashion-MNIST). */
  inChannels?: number;
  /** Widths of the three stages (default [16, 32, 64]); stages 2 and 3 halve the resolution. */
  channels?: readonly [number, number, number];
  /** Blocks per stage (default 1: eight weight layers on the main path, as ResNet-8). */
  blocks?: number;
}

/**
 * A ResNet for binarization in the Bi-Real Net layout, sized like `resnet8` for 28×28 images:
 * `stem` conv3×3(in→c1)–BN (no ReLU), three stages of `blocks` BiRealBlocks (widths c1, c2, c3; the
 * first block of stages 2 and 3 has stride 2), global average pooling, flatten, `fc`
 * Linear(c3→numClasses). Build it float, then binarize the block convs with prepareQat (sign
 * inputs, ±α weights; the stem and fc stay 8-bit under the plan's first/last rule) — see
 * docs/binary.md for the plan and the two-stage recipe (`clip: true` for the real-valued stage;
 * the binary model of the same options without `clip` loads its state dict unchanged).
 */
export class BiRealResNet extends Module {
  readonly stem: Sequential;
  readonly stages: Sequential;
  readonly pool: TensorModule;
  readonly flatten: TensorModule;
  readonly fc: TensorModule;

  constructor(options: BiRealResNetOptions = {}) {
    super();
    const [c1, c2, c3] = options.channels ?? [16, 32, 64];
    const blockOptions: BiRealBlockOptions = { shortcut: options.shortcut, downsample: options.downsample, clip: options.clip };
    this.stem = this.registerModule('stem', new Sequential(new Conv2d(options.inChannels ?? 1, c1, 3, { padding: 1, bias: false }), new BatchNorm2d(c1)));
    this.stages = this.registerModule('stages', resnetStages('BiRealResNet', [c1, c2, c3], options.blocks ?? 1, (inC, outC, stride) => new BiRealBlock(inC, outC, stride, blockOptions)));
    this.pool = this.registerModule('pool', new AdaptiveAvgPool2d(1));
    this.flatten = this.registerModule('flatten', new Flatten());
    this.fc = this.registerModule('fc', new Linear(c3, options.numClasses ?? 10));
  }

  /** x [N, in, H, W] -> logits [N, numClasses]. */
  forward(x: Tensor): Tensor {
    return this.fc.forward(this.flatten.forward(this.pool.forward(this.stages.forward(this.stem.forward(x)))));
  }

  /** Dotted names of the 3×3 convs inside the blocks (the ones a Bi-Real plan binarizes). */
  binaryConvNames(): string[] {
    return this.blockNames().flatMap((b) => [`${b}.main1.0`, `${b}.main2.0`]);
  }

  /** Dotted names of the 1×1 downsampling convs (empty without a stride or width change). */
  downsampleConvNames(): string[] {
    return this.blockNames().flatMap((b) => {
      const block = this.getSubmodule(b) as BiRealBlock;
      if (block.downsample === null) return [];
      return [`${b}.downsample.${block.downsampleMode === 'real' ? 1 : 0}`];
    });
  }

  private blockNames(): string[] {
    return this.stages.children().map((_, i) => `stages.${i}`);
  }
}

/** The Bi-Real ResNet-8 layout (see `BiRealResNet`): one block per stage, double residual and real-valued downsampling by default. */
export function biRealResnet8(options: Omit<BiRealResNetOptions, 'blocks'> = {}): BiRealResNet {
  return new BiRealResNet({ ...options, blocks: 1 });
}

function checkChoice<T extends string>(name: string, value: T, allowed: readonly T[]): T {
  if (!allowed.includes(value)) throw new Error(`BiRealBlock: ${name} must be one of ${allowed.join(', ')}, got ${JSON.stringify(value)}`);
  return value;
}
