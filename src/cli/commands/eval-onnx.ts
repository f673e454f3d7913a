/**
 * `lowbit eval FILE.onnx`: a float32 ONNX image classifier (e.g. exported by torch.onnx) imported
 * as a lowbit module and run on a test set: accuracy, images/s, and with --verify the same images
 * through onnxruntime-node, compared output for output (how faithful the import is).
 */
import { DataLoader, loadDataset, take } from '../../data/index.ts';
import { normalizeInPlace } from '../../data/dataset.ts';
import { evaluate, formatPercent } from '../../train/index.ts';
import { formatVerifyReport, moduleReference, verifyOnnx } from '../../onnx/verify.ts';
import { DEFAULT_MAX_ONNX_BYTES } from '../../onnx/proto.ts';
import { readFileLimited } from '../../format/index.ts';
import type { CommandIO } from '../command.ts';
import { loadOnnxImageModel, onnxDataset, onnxNormalize, onnxTensorModule, type OnnxNormalizeChoice } from '../onnx-model.ts';

export interface EvalOnnxOptions {
  readonly dataset?: string | undefined;
  readonly limit?: number | undefined;
  readonly batchSize: number;
  readonly normalize?: OnnxNormalizeChoice | undefined;
  readonly verify?: boolean | undefined;
}

export async function evalOnnxModel(file: string, options: EvalOnnxOptions, io: CommandIO): Promise<number> {
  const model = loadOnnxImageModel(file, 'eval: --model');
  const dataset = onnxDataset(model, options.dataset, (name) => loadDataset(name, 'test'), 'eval');
  const { stats, label } = onnxNormalize(model, options.normalize ?? 'auto', dataset);
  const full = loadDataset(dataset, 'test');
  const test = options.limit === undefined ? full : take(full, options.limit);
  io.print(`${file}: ONNX opset ${model.opset} (${model.producer}), ${model.parameters.toLocaleString('en-US')} parameters, input '${model.inputName}' [N, ${model.sampleShape.join(', ')}] -> '${model.outputName}' [N, ${model.classes}]`);
  io.print(`${test.name}: ${test.length} images; input scaling ${label}`);
  const module = onnxTensorModule(model);
  const loader = new DataLoader(test, { batchSize: options.batchSize, ...(stats ? { normalize: stats } : {}) });
  const t0 = performance.now();
  const r = evaluate(module, loader);
  const seconds = (performance.now() - t0) / 1000;
  io.print(`accuracy      ${formatPercent(r.accuracy)} (${Math.round(r.accuracy * test.length)}/${test.length}), loss ${r.loss.toFixed(4)}`);
  io.print(`throughput    ${(test.length / seconds).toFixed(0)} images/s wall (lowbit forward of the imported graph, batch ${Math.min(options.batchSize, test.length)})`);
  if (!options.verify) return 0;
  const x = new Float32Array(test.images);
  if (stats) normalizeInPlace(x, test.sampleShape, stats);
  const report = await verifyOnnx(readFileLimited(file, DEFAULT_MAX_ONNX_BYTES), moduleReference(module, test.sampleShape), { data: x, shape: test.sampleShape, count: test.length }, { progress: io.stderr });
  io.print(formatVerifyReport(report));
  if (report.status === 'ok') io.print('  reference: lowbit\'s import of the same file (float32), the same test images');
  return 0;
}
