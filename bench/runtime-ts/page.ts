/**
 * The in-page part of bench/runtime-ts/browser.ts (bundled for the browser): IntModel speed of the
 * old and new TypeScript executors (the new one with its lane-packed double GEMM, 'ts-new', and with
 * the WebAssembly SIMD128 kernels, 'ts-wasm') and the float fake-quant forward (reference backend, the only
 * one a browser has), interleaved rounds, best wall time per variant. No Node.js imports.
 */
import { noGrad } from '../../src/autograd/engine.ts';
import { Tensor, randn } from '../../src/tensor/index.ts';
import { buildBenchModel } from './models.ts';

export interface PageRow {
  readonly model: string;
  readonly batch: number;
  /** Best-round images/s per variant. */
  readonly imagesPerSecond: Record<string, number>;
  /** New executor's logits (both kernels) equal the old one's, bit for bit. */
  readonly identical: boolean;
}

export function runPage(specs: readonly string[], batch: number, rounds: number, seed: number): PageRow[] {
  const rows: PageRow[] = [];
  for (const spec of specs) {
    const [kind, scheme] = spec.split('-') as ['lenet5' | 'resnet8', 'w8a8' | 'w4a4'];
    const { label, model, im } = buildBenchModel(kind, scheme, seed);
    const x = randn([batch, 1, 28, 28]);
    const data = x.data as Float32Array;
    const variants: Record<string, () => Float32Array> = {
      'ts-old': () => { im.tsExecutor = 'reference'; return im.run(data, batch); },
      'ts-new': () => { im.tsExecutor = 'fast'; im.tsKernels = 'double'; return im.run(data, batch); },
      'ts-wasm': () => { im.tsExecutor = 'fast'; im.tsKernels = 'wasm'; return im.run(data, batch); },
      'float-fakequant-reference': () => noGrad(() => model.forward(new Tensor(data, x.shape)).data as Float32Array),
    };
    const best: Record<string, number> = {};
    const outs: Record<string, Float32Array> = {};
    for (let r = 0; r <= rounds; r++) {
      for (const [name, run] of Object.entries(variants)) {
        const t0 = performance.now();
        const out = run();
        const seconds = (performance.now() - t0) / 1000;
        if (r === 0) outs[name] = out;
        else best[name] = Math.max(best[name] ?? 0, batch / seconds);
      }
    }
    const b = outs['ts-old']!;
    const same = (a: Float32Array): boolean => a.length === b.length && a.every((v, i) => Object.is(v, b[i]));
    rows.push({ model: label, batch, imagesPerSecond: best, identical: same(outs['ts-new']!) && same(outs['ts-wasm']!) });
  }
  return rows;
}
