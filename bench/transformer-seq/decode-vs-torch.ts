/**
 * Greedy decoding speed of the float Transformer LM against PyTorch with a KV cache (see
 * bench/transformer-seq/decode.ts for what is measured; the bench section `decode` runs the same).
 * Writes bench/results/<--result, default transformer-decode>.json.
 *
 *   OPENBLAS_NUM_THREADS=1 nice -n 10 node --import tsx bench/transformer-seq/decode-vs-torch.ts [--reps 7] [--threads 2] [--result NAME]
 */
import { join } from 'node:path';
import { nativeInfo } from '../../src/backend/index.ts';
import { backendDetails } from '../../src/cli/backend-info.ts';
import { writeAtomic } from '../lib.ts';
import { measureDecode } from './decode.ts';

const argv = process.argv.slice(2);
const flag = (name: string): string | undefined => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : undefined;
};
const reps = Number(flag('reps') ?? 7);
const threads = Number(flag('threads') ?? 2);
const result = flag('result') ?? 'transformer-decode';
if (!/^[\w.-]+$/.test(result)) throw new RangeError(`--result must be a file name without a directory, got ${result}`);
if (!Number.isInteger(reps) || reps < 1) throw new RangeError(`--reps must be a positive integer, got ${flag('reps')}`);
if (!Number.isInteger(threads) || threads < 1) throw new RangeError(`--threads must be a positive integer, got ${flag('threads')}`);

const measured = await measureDecode({ reps, threads });
const out = join('bench', 'results', `${result}.json`);
const report = {
  command: `OPENBLAS_NUM_THREADS=1 nice -n 10 node --import tsx bench/transformer-seq/decode-vs-torch.ts --reps ${reps} --threads ${threads} --result ${result}`,
  date: new Date().toISOString(), backend: backendDetails(), nativeThreads: nativeInfo()?.threads ?? null,
  ...measured,
};
writeAtomic(out, `${JSON.stringify(report, null, 2)}\n`);
console.log(`load average (1 min) over the repeats: ${measured.loadAverage1m.median.toFixed(2)} (median); wrote ${out}`);
