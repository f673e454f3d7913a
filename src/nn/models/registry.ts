import type { TensorModule } from '../module.ts';
import { lenet5, type LeNet5Options } from './lenet5.ts';
import { mlp, type MlpOptions } from './mlp.ts';
import { cnn, type CnnOptions } from './cnn.ts';
import { resnet8, type ResNetOptions } from './resnet.ts';
import { mobilenet, type MobileNetOptions } from './mobilenet.ts';

/** Options of each named model. */
export interface ModelOptionsMap {
  lenet5: LeNet5Options;
  mlp: MlpOptions;
  cnn: CnnOptions;
  resnet8: Omit<ResNetOptions, 'blocks'>;
  mobilenet: MobileNetOptions;
}

export type ModelName = keyof ModelOptionsMap;

/** Names `createModel` accepts (for the CLI's `--model`). */
export const MODEL_NAMES: readonly ModelName[] = ['lenet5', 'mlp', 'cnn', 'resnet8', 'mobilenet'];

const FACTORIES: { [N in ModelName]: (options: ModelOptionsMap[N]) => TensorModule } = { lenet5, mlp, cnn, resnet8, mobilenet };

export function isModelName(name: string): name is ModelName {
  return (MODEL_NAMES as readonly string[]).includes(name);
}

/** A fresh model by name; unknown names throw listing the known ones. */
export function createModel<N extends ModelName>(name: N, options: ModelOptionsMap[N] = {}): TensorModule {
  if (!isModelName(name)) throw new Error(`unknown model '${String(name)}' (known: ${MODEL_NAMES.join(', ')})`);
  const factory: (options: ModelOptionsMap[N]) => TensorModule = FACTORIES[name];
  return factory(options);
}
