/**
 * @internal Model factories for the worker-thread tests (threads.test.ts): the workers import them
 * by module URL and export name.
 */
import { workerData } from 'node:worker_threads';
import { mlp } from '../nn/index.ts';
import type { TensorModule } from '../nn/module.ts';
import type { Tensor } from '../tensor/tensor.ts';

/** The tests' tiny MLP (16 inputs, 12 hidden, 3 classes). */
export function tinyMlp(): TensorModule {
  return mlp({ inputSize: 16, hidden: [12], numClasses: 3 });
}

/** tinyMlp whose forward throws on worker rank `failRank` from its `failAtCall`-th call (1-based). */
export function failingMlp(failRank: number, failAtCall: number): TensorModule {
  const model = tinyMlp();
  const rank = (workerData as { rank?: number } | null)?.rank;
  const forward = model.forward.bind(model);
  let calls = 0;
  model.forward = (x: Tensor): Tensor => {
    calls++;
    if (rank === failRank && calls >= failAtCall) throw new Error(`injected failure in forward call ${calls}`);
    return forward(x);
  };
  return model;
}

/** Not a module: the setup of every worker must fail. */
export function notAModel(): unknown {
  return { hello: 'world' };
}
