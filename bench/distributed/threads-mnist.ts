/**
 * Data-parallel training on real worker threads vs the in-process simulation vs a plain `fit`:
 * LeNet-5 on MNIST, momentum SGD (lr 0.05, m 0.9, constant), global batch 128, same initial weights
 * and data order for all three. Runs, in this order:
 *   fit        one model, whole batches, native kernels on the pool's default threads (2 here);
 *   inprocess  fitDataParallel, W workers one after another in this thread, kernels on 2 threads,
 *              then again on 1 kernel thread (the bit-for-bit reference of the threaded run);
 *   threads    fitDataParallelThreads, W worker threads x 1 kernel thread each.
 * Records samples/s (wall clock of the training epochs, evaluation excluded) and the process CPU
 * seconds (process.cpuUsage: every thread of the process, workers included), and checks that the
 * threaded run equals the in-process one bit for bit (final weights, every step's loss and bytes,
 * test accuracy). Results: bench/results/distributed-threads.json (atomic write).
 *
 *   nice -n 10 node --import tsx bench/distributed/threads-mnist.ts --epochs 1 --workers 2
 *
 * Options: --epochs E (1), --workers W (2), --compress none|dgc (none), --seed (0), --limit N training samples (all), --out FILE.
 */
import { DATASET_STATS, DataLoader, loadDataset, take, type Dataset } from '../../src/data/index.ts';
import { lenet5 } from '../../src/nn/index.ts';
import type { TensorModule } from '../../src/nn/module.ts';
import { SGD } from '../../src/optim/index.ts';
import { manualSeed } from '../../src/tensor/index.ts';
import { fit, evaluate } from '../../src/train/index.ts';
import { fitDataParallel, type CompressorName, type DataParallelHistory } from '../../src/distributed/index.ts';
import { fitDataParallelThreads } from '../../src/distributed/node.ts';
import { nativeInfo, setNativeThreads } from '../../src/index.ts';
import { writeAtomic } from '../lib.ts';

interface Settings {
  epochs: number;
  workers: number;
  compress: CompressorName;
  seed: number;
  limit: number | undefined;
  out: string;
}

function parseArgs(argv: string[]): Settings {
  const s: Settings = { epochs: 1, workers: 2, compress: 'none', seed: 0, limit: undefined, out: 'bench/results/distributed-threads.json' };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i]!;
    const value = argv[i + 1];
    if (value === undefined) throw new Error(`${key} needs a value`);
    const int = (): number => {
      const v = Number(value);
      if (!Number.isInteger(v) || v < 0) throw new Error(`${key}: not a non-negative integer: ${value}`);
      return v;
    };
    switch (key) {
      case '--epochs': s.epochs = int(); break;
      case '--workers': s.workers = int(); break;
      case '--seed': s.seed = int(); break;
      case '--limit': s.limit = int(); break;
      case '--compress':
        if (value !== 'none' && value !== 'dgc') throw new Error('--compress: none or dgc');
        s.compress = value;
        break;
      case '--out': s.out = value; break;
      default: throw new Error(`unknown option ${key}`);
    }
  }
  return s;
}

interface Row {
  mode: 'fit' | 'inprocess' | 'threads';
  workers: number;
  kernelThreads: number;
  samplesPerSecond: number;
  trainSeconds: number;
  cpuSeconds: number;
  testAccuracy: number;
  bytesSent?: number;
}

const LR = 0.05;
const MOMENTUM = 0.9;
const BATCH = 128;

function cpuSeconds(since: NodeJS.CpuUsage): number {
  const u = process.cpuUsage(since);
  return (u.user + u.system) / 1e6;
}

function flat(m: TensorModule): number[] {
  return m.parameters().flatMap((p) => Array.from(p.data));
}

async function main(): Promise<void> {
  const s = parseArgs(process.argv.slice(2));
  const full = loadDataset('mnist', 'train');
  const trainSet: Dataset = s.limit === undefined ? full : take(full, s.limit);
  const testSet = loadDataset('mnist', 'test');
  const normalize = DATASET_STATS.mnist;
  const loader = () => new DataLoader(trainSet, { batchSize: BATCH, shuffle: true, seed: s.seed, normalize });
  const testLoader = new DataLoader(testSet, { batchSize: 500, normalize });
  const poolThreads = nativeInfo()?.threads ?? 0;
  const samples = s.epochs * trainSet.length;
  const seconds = (records: { seconds: number }[]): number => records.reduce((t, r) => t + r.seconds, 0);
  const rows: Row[] = [];

  manualSeed(s.seed);
  const plain = lenet5();
  let cpu = process.cpuUsage();
  const plainHistory = fit(plain, { trainLoader: loader(), optimizer: new SGD(plain.parameters(), { lr: LR, momentum: MOMENTUM }), epochs: s.epochs, progress: false });
  const plainCpu = cpuSeconds(cpu);
  const plainSeconds = seconds(plainHistory.epochs);
  rows.push({ mode: 'fit', workers: 1, kernelThreads: poolThreads, samplesPerSecond: samples / plainSeconds, trainSeconds: plainSeconds, cpuSeconds: plainCpu, testAccuracy: evaluate(plain, testLoader).accuracy });

  const dataParallel = { workers: s.workers, lr: LR, momentum: MOMENTUM, compressor: s.compress, epochs: s.epochs, progress: false, seed: s.seed } as const;
  manualSeed(s.seed);
  const simulated = lenet5();
  cpu = process.cpuUsage();
  const simulatedHistory: DataParallelHistory = await fitDataParallel(simulated, { ...dataParallel, trainLoader: loader(), replica: () => lenet5() });
  const simulatedCpu = cpuSeconds(cpu);
  const simulatedSeconds = seconds(simulatedHistory.epochs);
  rows.push({ mode: 'inprocess', workers: s.workers, kernelThreads: poolThreads, samplesPerSecond: samples / simulatedSeconds, trainSeconds: simulatedSeconds, cpuSeconds: simulatedCpu, testAccuracy: evaluate(simulated, testLoader).accuracy, bytesSent: simulatedHistory.traffic.bytesSent });

  // The native kernels' float results depend on the pool's thread count (reductions split per
  // thread), so the bit-for-bit reference of a W x 1 threaded run is the in-process run on 1 kernel thread.
  setNativeThreads(1);
  manualSeed(s.seed);
  const reference = lenet5();
  cpu = process.cpuUsage();
  const referenceHistory: DataParallelHistory = await fitDataParallel(reference, { ...dataParallel, trainLoader: loader(), replica: () => lenet5() });
  const referenceCpu = cpuSeconds(cpu);
  const referenceSeconds = seconds(referenceHistory.epochs);
  rows.push({ mode: 'inprocess', workers: s.workers, kernelThreads: 1, samplesPerSecond: samples / referenceSeconds, trainSeconds: referenceSeconds, cpuSeconds: referenceCpu, testAccuracy: evaluate(reference, testLoader).accuracy, bytesSent: referenceHistory.traffic.bytesSent });
  if (poolThreads > 0) setNativeThreads(poolThreads);

  manualSeed(s.seed);
  const threaded = lenet5();
  cpu = process.cpuUsage();
  const threadedHistory = await fitDataParallelThreads(threaded, { ...dataParallel, trainLoader: loader(), replica: { module: import.meta.resolve('../../src/nn/index.ts'), export: 'lenet5' }, kernelThreads: 1 });
  const threadedCpu = cpuSeconds(cpu);
  const threadedSeconds = seconds(threadedHistory.epochs);
  rows.push({ mode: 'threads', workers: s.workers, kernelThreads: 1, samplesPerSecond: samples / threadedSeconds, trainSeconds: threadedSeconds, cpuSeconds: threadedCpu, testAccuracy: evaluate(threaded, testLoader).accuracy, bytesSent: threadedHistory.traffic.bytesSent });

  const compare = (x: TensorModule, hx: DataParallelHistory, rx: Row) => {
    const a = flat(x);
    const b = flat(threaded);
    return {
      weightsBitIdentical: a.length === b.length && a.every((v, i) => Object.is(v, b[i])),
      maxWeightDifference: a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0),
      stepLossesEqual: hx.stepLosses.length === threadedHistory.stepLosses.length && hx.stepLosses.every((v, i) => Object.is(v, threadedHistory.stepLosses[i])),
      stepBytesEqual: hx.stepBytesSent.length === threadedHistory.stepBytesSent.length && hx.stepBytesSent.every((v, i) => v === threadedHistory.stepBytesSent[i]),
      testAccuracy: [rx.testAccuracy, rows[3]!.testAccuracy],
      bytesSent: [rx.bytesSent, rows[3]!.bytesSent],
    };
  };
  const equality = {
    threadsVsInprocess1KernelThread: compare(reference, referenceHistory, rows[2]!),
    threadsVsInprocess2KernelThreads: compare(simulated, simulatedHistory, rows[1]!),
    maxReplicaDifference: threadedHistory.maxReplicaDifference,
  };
  const result = { bench: 'distributed-threads', date: new Date().toISOString(), settings: { ...s, lr: LR, momentum: MOMENTUM, batch: BATCH }, backend: nativeInfo(), rows, equality };
  writeAtomic(s.out, `${JSON.stringify(result, null, 2)}\n`);
  console.log('| run | workers x kernel threads | samples/s | train s | CPU s | test acc | bytes sent |');
  console.log('| --- | --- | ---: | ---: | ---: | ---: | ---: |');
  for (const r of rows) {
    console.log(`| ${r.mode} | ${r.workers} x ${r.kernelThreads} | ${r.samplesPerSecond.toFixed(0)} | ${r.trainSeconds.toFixed(2)} | ${r.cpuSeconds.toFixed(2)} | ${(r.testAccuracy * 100).toFixed(2)} % | ${r.bytesSent ?? '-'} |`);
  }
  console.log(JSON.stringify(equality, null, 1));
}

await main();
