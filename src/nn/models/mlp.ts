import { Sequential } from '../sequential.ts';
import { Flatten } from '../flatten.ts';
import { Linear } from '../linear.ts';
import { BatchNorm1d } from '../batchnorm.ts';
import { ReLU } from '../activation.ts';
import { Dropout } from '../dropout.ts';

export interface MlpOptions {
  /** Features after flattening (default 784 = 28·28). */
  inputSize?: number;
  /** Widths of the hidden layers (default [512, 512]). */
  hidden?: readonly number[];
  numClasses?: number;
  /** Dropout probability after each hidden activation; 0 (default) adds no Dropout layer. */
  dropout?: number;
  /** BatchNorm1d between each hidden Linear and its ReLU (default false). */
  batchNorm?: boolean;
}

/**
 * Multi-layer perceptron as a Sequential: Flatten, then per hidden width
 * Linear [– BatchNorm1d] – ReLU [– Dropout], then Linear to numClasses. Hidden Linears drop their
 * bias when followed by BatchNorm.
 */
export function mlp(options: MlpOptions = {}): Sequential {
  const hidden = options.hidden ?? [512, 512];
  const dropout = options.dropout ?? 0;
  const batchNorm = options.batchNorm ?? false;
  const model = new Sequential(new Flatten());
  let width = options.inputSize ?? 784;
  for (const h of hidden) {
    model.append(new Linear(width, h, { bias: !batchNorm }));
    if (batchNorm) model.append(new BatchNorm1d(h));
    model.append(new ReLU());
    if (dropout > 0) model.append(new Dropout(dropout));
    width = h;
  }
  model.append(new Linear(width, options.numClasses ?? 10));
  return model;
}
