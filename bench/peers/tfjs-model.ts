/**
 * The TensorFlow.js peer models, shared by the Node peer (tfjs-bench.ts) and the Chromium page of
 * bench/browser-train.ts: LeNet-5 and the MLP 784-512-512-10 written with @tensorflow/tfjs-core ops,
 * with PyTorch's default initialisation ranges (uniform ±1/√fan_in), and one training step /
 * inference call over a pool of random batches.
 *
 * lenet5 = Conv(1→6, 5×5, pad 2)-ReLU-MaxPool2-Conv(6→16, 5×5)-ReLU-MaxPool2-Flatten-Dense(400,120)-
 * ReLU-Dense(120,84)-ReLU-Dense(84,10); mlp = Dense 784-512-512-10 with ReLUs. TF.js convolutions are
 * channels-last (NHWC), so the images are [N, 28, 28, 1]; the arithmetic per sample is the same as
 * lowbit's NCHW LeNet-5.
 */
import type * as tfCore from '@tensorflow/tfjs-core';

type Tf = typeof tfCore;
type Tensor = tfCore.Tensor;
type Tensor2D = tfCore.Tensor2D;
type Tensor4D = tfCore.Tensor4D;
type Variable = tfCore.Variable;

export type TfjsModel = 'lenet5' | 'mlp';

export interface Net {
  vars: Variable[];
  forward: (x: Tensor) => Tensor2D;
  inputShape: number[];
}

/** The model with PyTorch's default initialisation ranges (uniform ±1/√fan_in). */
export function buildNet(tf: Tf, model: TfjsModel): Net {
  const vars: Variable[] = [];
  const param = (shape: number[], fanIn: number): Variable => {
    const b = 1 / Math.sqrt(fanIn);
    const v = tf.variable(tf.randomUniform(shape, -b, b, 'float32', 7 + vars.length));
    vars.push(v);
    return v;
  };
  const dense = (inF: number, outF: number): ((x: Tensor2D) => Tensor2D) => {
    const w = param([inF, outF], inF);
    const b = param([outF], inF);
    return (x) => tf.add(tf.matMul(x, w as Tensor2D), b);
  };
  if (model === 'mlp') {
    const l1 = dense(784, 512), l2 = dense(512, 512), l3 = dense(512, 10);
    return { vars, inputShape: [784], forward: (x) => l3(tf.relu(l2(tf.relu(l1(x as Tensor2D))))) };
  }
  const k1 = param([5, 5, 1, 6], 25), b1 = param([6], 25);
  const k2 = param([5, 5, 6, 16], 150), b2 = param([16], 150);
  const f1 = dense(400, 120), f2 = dense(120, 84), f3 = dense(84, 10);
  return {
    vars,
    inputShape: [28, 28, 1],
    forward: (x) => {
      const x4 = x as Tensor4D;
      // conv1 pads 2 on each side ('same' for a 5×5 kernel at stride 1): 28×28 stays 28×28
      const c1 = tf.maxPool(tf.relu(tf.add<Tensor4D>(tf.conv2d(x4, k1 as Tensor4D, 1, 'same'), b1)), 2, 2, 'valid');
      const c2 = tf.maxPool(tf.relu(tf.add<Tensor4D>(tf.conv2d(c1, k2 as Tensor4D, 1, 'valid'), b2)), 2, 2, 'valid');
      // NHWC flatten: the order of the 400 features differs from NCHW, the work does not
      const h = tf.reshape(c2, [x4.shape[0], 400]) as Tensor2D;
      return f3(tf.relu(f2(tf.relu(f1(h)))));
    },
  };
}

/**
 * A closure running one step on the next of 8 random batches (inputs N(0, 1), labels uniform in
 * [0, 10)): 'train' = forward, softmax cross-entropy, backward, SGD with momentum, loss read back;
 * 'infer' = forward, logits read back. Returns the loss (train) or 0.
 */
export function makeStep(tf: Tf, net: Net, task: 'train' | 'infer', batch: number, lr: number, momentum: number): () => number {
  const batches = Array.from({ length: 8 }, (_, i) => ({
    x: tf.randomNormal([batch, ...net.inputShape], 0, 1, 'float32', 100 + i),
    y: tf.oneHot(tf.randomUniform([batch], 0, 10, 'int32', 200 + i) as tfCore.Tensor1D, 10),
  }));
  const sgd = tf.train.momentum(lr, momentum);
  let next = 0;
  return () => {
    const { x, y } = batches[next]!;
    next = (next + 1) % batches.length;
    if (task === 'infer') {
      const logits = tf.tidy(() => net.forward(x));
      logits.dataSync();
      logits.dispose();
      return 0;
    }
    const loss = sgd.minimize(() => tf.losses.softmaxCrossEntropy(y, net.forward(x)) as tfCore.Scalar, true, net.vars)!;
    const value = loss.dataSync()[0]!;
    loss.dispose();
    return value;
  };
}
