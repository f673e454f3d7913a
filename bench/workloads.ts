/**
 * The lowbit side of the end-to-end benchmarks: models, batches and one training step, written
 * against the public API (createModel, createOptimizer, crossEntropy, DataLoader).
 */
import { availableBackends, getBackend, setBackend, setWasmThreads, wasmThreadsInfo, type BackendName } from '../src/backend/index.ts';
import { loadNative } from '../src/backend/native/index.ts';
import { loadWasm } from '../src/backend/wasm/index.ts';
import { DATASET_STATS, DataLoader, loadDataset, type Dataset } from '../src/data/index.ts';
import { createModel, type TensorModule } from '../src/nn/index.ts';
import { Adam, createOptimizer } from '../src/optim/index.ts';
import { prepareQat, qatFromCliOptions, qatParamGroups } from '../src/quant/qat/index.ts';
import { Tensor, crossEntropy, manualSeed, randint, randn } from '../src/tensor/index.ts';
import { errorMessage, measureRate, type SectionContext } from './lib.ts';

export type BenchModel = 'lenet5' | 'mlp';

export const MODEL_LABEL: Record<BenchModel, string> = {
  lenet5: 'LeNet-5',
  mlp: 'MLP 784-512-512-10',
};

export function buildModel(name: BenchModel, seed = 0): TensorModule {
  manualSeed(seed);
  return name === 'lenet5' ? createModel('lenet5') : createModel('mlp', { hidden: [512, 512] });
}

export interface XY {
  readonly x: Tensor;
  readonly y: Tensor;
}

/** Where batches came from, for the notes under a table. */
export interface BatchPool {
  readonly batches: XY[];
  readonly source: string;
}

const datasets = new Map<string, Dataset | string>();

/** MNIST split, loaded once; a string is the reason it could not be loaded. */
export function mnist(split: 'train' | 'test'): Dataset | string {
  let d = datasets.get(split);
  if (d === undefined) {
    try {
      d = loadDataset('mnist', split);
    } catch (e) {
      d = errorMessage(e);
    }
    datasets.set(split, d);
  }
  return d;
}

/**
 * `count` batches of `batch` images [B, 1, 28, 28]: real MNIST (normalised, shuffled, from `split`)
 * when the dataset loads, else random normal images with uniform labels.
 */
export function batchPool(batch: number, count: number, split: 'train' | 'test' = 'train'): BatchPool {
  const ds = mnist(split);
  if (typeof ds !== 'string') {
    const loader = new DataLoader(ds, { batchSize: batch, shuffle: true, seed: 1, dropLast: true, normalize: DATASET_STATS.mnist });
    const batches: XY[] = [];
    for (const b of loader) {
      batches.push({ x: b.x, y: b.y });
      if (batches.length === count) break;
    }
    return { batches, source: `real MNIST ${split} batches (normalised)` };
  }
  manualSeed(123);
  const batches = Array.from({ length: count }, () => ({ x: randn([batch, 1, 28, 28]), y: randint(10, [batch]) }));
  return { batches, source: `random MNIST-shaped data (MNIST unavailable: ${ds})` };
}

export const SGD_CONFIG = { lr: 0.01, momentum: 0.9 } as const;

/**
 * A training-step closure over a cycling pool of batches: forward, cross-entropy, backward,
 * optimizer step, zero grad, and reading the loss (as `fit` does every step).
 */
export function trainStepper(model: TensorModule, pool: readonly XY[]): () => void {
  return stepWith(model, createOptimizer('sgd', model.parameters(), { ...SGD_CONFIG }), pool);
}

/** trainStepper's step with Adam at `lr` (no weight decay). */
export function adamStepper(model: TensorModule, pool: readonly XY[], lr: number): () => void {
  return stepWith(model, new Adam(model.parameters(), { lr }), pool);
}

/** The step the steppers time: forward, cross-entropy, backward, optimizer step, zero grad, loss read back. */
function stepWith(model: TensorModule, optimizer: { step(): void; zeroGrad(): void }, pool: readonly XY[]): () => void {
  model.train();
  let i = 0;
  return () => {
    const { x, y } = pool[i++ % pool.length]!;
    const loss = crossEntropy(model.forward(x), y);
    loss.backward();
    optimizer.step();
    optimizer.zeroGrad();
    loss.item();
  };
}

/** The default `lowbit train` job's optimizer: Adam lr 2e-3, quantizer parameters (LSQ steps) at 0.1x. */
export const QAT_JOB = { lr: 2e-3, quantLrScale: 0.1 } as const;

/**
 * A training-step closure of the default `lowbit train` job (LeNet-5, W4A4 LSQ QAT: first / last
 * layers and the input at 8 bit; Adam, QAT_JOB) over a cycling pool of batches, built as
 * src/cli/commands/train.ts builds it; the step is trainStepper's.
 */
export function qatTrainStepper(pool: readonly XY[], seed = 0): () => void {
  manualSeed(seed);
  const model = createModel('lenet5');
  prepareQat(model, qatFromCliOptions({ quant: 'w4a4' })!);
  return stepWith(model, new Adam(qatParamGroups(model, QAT_JOB), { lr: QAT_JOB.lr, weightDecay: 0 }), pool);
}

const native = loadNative();
const wasm = loadWasm();

/** Backends to measure, fastest first: native (when its addon loads), wasm (when the engine has SIMD128), reference. */
export function benchBackends(): BackendName[] {
  const have = availableBackends();
  return (['native', 'wasm', 'reference'] as const).filter((b) => have.includes(b));
}

/** Runs `fn` with `backend` selected, restoring the previous backend afterwards. */
/** A lowbit row of a section: a backend, and for wasm whether its worker pool is cut to one thread. */
export interface Contender {
  readonly backend: 'native' | 'wasm' | 'reference';
  readonly oneThread: boolean;
}

/**
 * native, wasm, reference — and, when the wasm pool runs several threads, wasm again on one
 * thread (the pool's gain, and the like-for-like row against single-threaded peers).
 */
export function contenders(backends: readonly BackendName[]): Contender[] {
  const oneThreadRow = backends.includes('wasm') && wasmThreadsInfo().active > 1;
  return [
    { backend: 'native', oneThread: false },
    { backend: 'wasm', oneThread: false },
    ...(oneThreadRow ? [{ backend: 'wasm' as const, oneThread: true }] : []),
    { backend: 'reference', oneThread: false },
  ];
}

/**
 * Items/s of the closure `make()` builds, on the contender's backend (the wasm pool set to one
 * thread for the duration when asked, then back to `ctx.threads`); warm-up 1 call on the reference
 * backend, 5 elsewhere.
 */
export async function rateOn(ctx: SectionContext, c: Contender, make: () => () => void, itemsPerCall: number): Promise<{ median: number; repeats: number[]; steps: number }> {
  if (c.oneThread) await setWasmThreads(1);
  try {
    return await withBackend(c.backend, () =>
      measureRate(make(), { warmup: c.backend === 'reference' ? 1 : 5, repeats: ctx.repeats, targetSeconds: ctx.targetSeconds, itemsPerCall }),
    );
  } finally {
    if (c.oneThread) await setWasmThreads(ctx.threads);
  }
}

export async function withBackend<T>(backend: BackendName, fn: () => Promise<T>): Promise<T> {
  const previous = getBackend();
  setBackend(backend);
  try {
    return await fn();
  } finally {
    setBackend(previous);
  }
}

export function implName(backend: BackendName): string {
  if (backend !== 'wasm') return `lowbit (${backend})`;
  const threads = wasmThreadsInfo().active;
  return `lowbit (wasm, ${threads} thread${threads === 1 ? '' : 's'})`;
}

/**
 * Starts the wasm backend's workers for `threads` threads (the sections pass the peers' thread
 * count) and says how many it runs and why fewer, for the notes.
 */
export async function prepareWasmThreads(threads: number): Promise<string> {
  const active = await setWasmThreads(threads);
  const reason = wasmThreadsInfo().reason;
  return `lowbit (wasm): the WebAssembly SIMD128 kernels (src/backend/wasm) run in Node's V8 on ${active} thread${active === 1 ? '' : 's'}${reason ? ` (${reason})` : ''}: the large GEMM and convolution calls are split over worker_threads on a shared memory, bit-exact with one thread; ops it has no kernel for run on the reference backend. It is the browser's default backend.`;
}

/** Why the native backend is missing, for skip rows. */
export function nativeMissingReason(): string {
  return `native backend not available (${native.ok ? 'not registered' : native.reason})`;
}

/** Why `backend` is missing, for skip rows. */
export function backendMissingReason(backend: BackendName): string {
  if (backend === 'wasm') return `wasm backend not available (${wasm.ok ? 'not registered' : wasm.reason})`;
  return nativeMissingReason();
}
