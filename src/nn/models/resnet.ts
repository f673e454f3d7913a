import type { Tensor } from '../../tensor/index.ts';
import { Module, type TensorModule } from '../module.ts';
import { Sequential } from '../sequential.ts';
import { Conv2d } from '../conv.ts';
import { BatchNorm2d } from '../batchnorm.ts';
import { ReLU } from '../activation.ts';
import { AdaptiveAvgPool2d } from '../pooling.ts';
import { Flatten } from '../flatten.ts';
import { Linear } from '../linear.ts';
import { Add } from '../merge.ts';

/** A module whose forward takes two tensors (nn.Add, or the QuantAdd prepareQat swaps in). */
export type MergeModule = Module & { forward(a: Tensor, b: Tensor): Tensor };

/**
 * The basic residual block of He et al. 2016 ("Deep Residual Learning for Image Recognition"):
 * relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), 3×3 convs without bias, the first with
 * `stride`; the shortcut is x itself, or conv1×1(stride)–BN (a projection) when the stride or the
 * width changes. Children, registered in the order forward calls them: `main1` (conv–BN–ReLU),
 * `main2` (conv–BN), `shortcut` (projection only), `add` (nn.Add), `relu`.
 */
export class BasicBlock extends Module {
  readonly main1: Sequential;
  readonly main2: Sequential;
  readonly shortcut: Sequential | null;
  readonly add: MergeModule;
  readonly relu: TensorModule;

  constructor(inChannels: number, outChannels: number, stride = 1) {
    super();
    this.main1 = this.registerModule('main1', new Sequential(
      new Conv2d(inChannels, outChannels, 3, { stride, padding: 1, bias: false }), new BatchNorm2d(outChannels), new ReLU(),
    ));
    this.main2 = this.registerModule('main2', new Sequential(new Conv2d(outChannels, outChannels, 3, { padding: 1, bias: false }), new BatchNorm2d(outChannels)));
    this.shortcut = stride !== 1 || inChannels !== outChannels
      ? this.registerModule('shortcut', new Sequential(new Conv2d(inChannels, outChannels, 1, { stride, bias: false }), new BatchNorm2d(outChannels)))
      : null;
    this.add = this.registerModule('add', new Add());
    this.relu = this.registerModule('relu', new ReLU());
  }

  /** x [N, in, H, W] -> [N, out, H/stride, W/stride]. */
  forward(x: Tensor): Tensor {
    const y = this.main2.forward(this.main1.forward(x));
    const s = this.shortcut ? this.shortcut.forward(x) : x;
    return this.relu.forward(this.add.forward(y, s));
  }
}

export interface ResNetOptions {
  /** Output classes (default 10). */
  numClasses?: number;
  /** Input channels (default 1, MNIST / Fashion-MNIST). */
  inChannels?: number;
  /** Widths of the three stages (default [16, 32, 64]); stages 2 and 3 halve the resolution. */
  channels?: readonly [number, number, number];
  /** Basic blocks per stage (default 1: ResNet-8 = stem + 3·2 convs + the classifier). */
  blocks?: number;
}

/**
 * The three stages of a CIFAR-style ResNet: `blocks` blocks per width, the first block of the second
 * and third stage with stride 2; `block(in, out, stride)` makes one block. `who` names the model in
 * the error for a bad block count. @internal shared by ResNet and BiRealResNet.
 */
export function resnetStages(who: string, widths: readonly number[], blocks: number, block: (inChannels: number, outChannels: number, stride: number) => TensorModule): Sequential {
  if (!Number.isInteger(blocks) || blocks < 1) throw new Error(`${who}: blocks must be a positive integer, got ${blocks}`);
  const stages = new Sequential();
  let width = widths[0]!;
  for (const [i, c] of widths.entries()) {
    for (let b = 0; b < blocks; b++) {
      stages.append(block(width, c, i > 0 && b === 0 ? 2 : 1));
      width = c;
    }
  }
  return stages;
}

/**
 * A small CIFAR-style ResNet for 28×28 images: `stem` conv3×3(in→c1)–BN–ReLU, three stages of
 * `blocks` BasicBlocks (widths c1, c2, c3; the first block of stages 2 and 3 has stride 2 and a
 * projection shortcut), global average pooling, flatten, `fc` Linear(c3→numClasses). With the
 * defaults (one block per stage, [16, 32, 64]) it is ResNet-8: 8 weight layers on the main path
 * plus 2 projections, 77,754 parameters (BatchNorm included).
 * Residual sums are `nn.Add` modules, so `convert` captures the blocks as an integer DAG.
 */
export class ResNet extends Module {
  readonly stem: Sequential;
  readonly stages: Sequential;
  readonly pool: TensorModule;
  readonly flatten: TensorModule;
  readonly fc: TensorModule;

  constructor(options: ResNetOptions = {}) {
    super();
    const [c1, c2, c3] = options.channels ?? [16, 32, 64];
    this.stem = this.registerModule('stem', new Sequential(new Conv2d(options.inChannels ?? 1, c1, 3, { padding: 1, bias: false }), new BatchNorm2d(c1), new ReLU()));
    this.stages = this.registerModule('stages', resnetStages('ResNet', [c1, c2, c3], options.blocks ?? 1, (inC, outC, stride) => new BasicBlock(inC, outC, stride)));
    this.pool = this.registerModule('pool', new AdaptiveAvgPool2d(1));
    this.flatten = this.registerModule('flatten', new Flatten());
    this.fc = this.registerModule('fc', new Linear(c3, options.numClasses ?? 10));
  }

  /** x [N, in, H, W] -> logits [N, numClasses]. */
  forward(x: Tensor): Tensor {
    return this.fc.forward(this.flatten.forward(this.pool.forward(this.stages.forward(this.stem.forward(x)))));
  }
}

/** ResNet-8 (see `ResNet`): one basic block per stage. */
export function resnet8(options: Omit<ResNetOptions, 'blocks'> = {}): ResNet {
  return new ResNet({ ...options, blocks: 1 });
}
