import type { Tensor } from '../../tensor/index.ts';
import { Module, type TensorModule } from '../module.ts';
import { Sequential } from '../sequential.ts';
import { Conv2d } from '../conv.ts';
import { BatchNorm1d, BatchNorm2d } from '../batchnorm.ts';
import { ReLU } from '../activation.ts';
import { MaxPool2d } from '../pooling.ts';
import { Flatten } from '../flatten.ts';
import { Linear } from '../linear.ts';
import { Dropout } from '../dropout.ts';

export interface CnnOptions {
  numClasses?: number;
  /** Channels of the two conv stages (default [16, 32]: ~29 MFLOP per training sample, CPU-friendly). */
  channels?: readonly [number, number];
  /** Width of the hidden fully connected layer (default 128). */
  hidden?: number;
  /** Dropout before the last layer (default 0.25). */
  dropout?: number;
}

function convBnRelu(inChannels: number, outChannels: number): TensorModule[] {
  return [new Conv2d(inChannels, outChannels, 3, { padding: 1, bias: false }), new BatchNorm2d(outChannels), new ReLU()];
}

/**
 * A small VGG-style network for 1×28×28 images (Fashion-MNIST):
 * `features` = [conv3×3(1→c1)–BN–ReLU, conv3×3(c1→c1)–BN–ReLU, maxpool2,
 *               conv3×3(c1→c2)–BN–ReLU, conv3×3(c2→c2)–BN–ReLU, maxpool2], then
 * `classifier` = [flatten, linear(c2·7·7→128)–BN1d–ReLU–dropout(0.25), linear(128→numClasses)],
 * with (c1, c2) = (16, 32) by default.
 * Convs and the hidden Linear have no bias (BN follows). Names read `features.0.weight`, `classifier.1.weight`.
 */
export class Cnn extends Module {
  readonly features: Sequential;
  readonly classifier: Sequential;

  constructor(options: CnnOptions = {}) {
    super();
    const [c1, c2] = options.channels ?? [16, 32];
    const hidden = options.hidden ?? 128;
    this.features = this.registerModule('features', new Sequential(
      ...convBnRelu(1, c1), ...convBnRelu(c1, c1), new MaxPool2d(2),
      ...convBnRelu(c1, c2), ...convBnRelu(c2, c2), new MaxPool2d(2),
    ));
    this.classifier = this.registerModule('classifier', new Sequential(
      new Flatten(),
      new Linear(c2 * 7 * 7, hidden, { bias: false }),
      new BatchNorm1d(hidden),
      new ReLU(),
      new Dropout(options.dropout ?? 0.25),
      new Linear(hidden, options.numClasses ?? 10),
    ));
  }

  /** x [N, 1, 28, 28] -> logits [N, numClasses]. */
  forward(x: Tensor): Tensor {
    return this.classifier.forward(this.features.forward(x));
  }
}

/** A fresh `Cnn`. */
export function cnn(options: CnnOptions = {}): Cnn {
  return new Cnn(options);
}
