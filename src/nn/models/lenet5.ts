import type { Tensor } from '../../tensor/index.ts';
import { Module, type TensorModule } from '../module.ts';
import { Conv2d } from '../conv.ts';
import { Linear } from '../linear.ts';
import { ReLU } from '../activation.ts';
import { MaxPool2d } from '../pooling.ts';
import { Flatten } from '../flatten.ts';
import { forwardChain } from '../fusion.ts';

export interface LeNet5Options {
  /** Output classes (default 10). */
  numClasses?: number;
}

/**
 * Classic LeNet-5 for 1×28×28 images (the first conv is padded to keep 28×28):
 * conv1 5×5 (1→6, pad 2) – relu1 – pool1 – conv2 5×5 (6→16) – relu2 – pool2 – flatten –
 * fc1 (400→120) – relu3 – fc2 (120→84) – relu4 – fc3 (84→numClasses). 61,706 parameters for 10 classes.
 *
 * Fields are typed as TensorModule because quantization may swap them (`setSubmodule('conv1', …)`).
 */
export class LeNet5 extends Module {
  readonly conv1: TensorModule;
  readonly relu1: TensorModule;
  readonly pool1: TensorModule;
  readonly conv2: TensorModule;
  readonly relu2: TensorModule;
  readonly pool2: TensorModule;
  readonly flatten: TensorModule;
  readonly fc1: TensorModule;
  readonly relu3: TensorModule;
  readonly fc2: TensorModule;
  readonly relu4: TensorModule;
  readonly fc3: TensorModule;

  constructor(options: LeNet5Options = {}) {
    super();
    this.conv1 = this.registerModule('conv1', new Conv2d(1, 6, 5, { padding: 2 }));
    this.relu1 = this.registerModule('relu1', new ReLU());
    this.pool1 = this.registerModule('pool1', new MaxPool2d(2));
    this.conv2 = this.registerModule('conv2', new Conv2d(6, 16, 5));
    this.relu2 = this.registerModule('relu2', new ReLU());
    this.pool2 = this.registerModule('pool2', new MaxPool2d(2));
    this.flatten = this.registerModule('flatten', new Flatten());
    this.fc1 = this.registerModule('fc1', new Linear(16 * 5 * 5, 120));
    this.relu3 = this.registerModule('relu3', new ReLU());
    this.fc2 = this.registerModule('fc2', new Linear(120, 84));
    this.relu4 = this.registerModule('relu4', new ReLU());
    this.fc3 = this.registerModule('fc3', new Linear(84, options.numClasses ?? 10));
  }

  /**
   * x [N, 1, 28, 28] -> logits [N, numClasses]. Without gradients (inference), each
   * conv–relu–pool block runs as one fused op (see `forwardChain`).
   */
  forward(x: Tensor): Tensor {
    return forwardChain([
      this.conv1, this.relu1, this.pool1, this.conv2, this.relu2, this.pool2,
      this.flatten, this.fc1, this.relu3, this.fc2, this.relu4, this.fc3,
    ], x);
  }
}

/** A fresh LeNet-5 (see `LeNet5`). */
export function lenet5(options: LeNet5Options = {}): LeNet5 {
  return new LeNet5(options);
}
