/**
 * Where the integer Transformer LM's forward spends its time. Three kinds run batch by batch alternately:
 * 'scalar' = the forward as before the AVX-512 work (scalar loops, `addon.intTfLoops(false)`, and the per-op
 * calls, `setIntTransformerFusedCalls(false)`); 'avx512' = the AVX-512 loops and the fused per-op calls (fc1 +
 * i-GELU, the head's float step in C++), each native call timed by wrapping the addon's functions (the rest of
 * the wall time is the TypeScript around them: argument checks, buffers); 'one-call' = the whole forward in one
 * native call (`addon.intTfForward`, groups of whole sequences per thread), its stages timed inside by the
 * addon's stage timers (`addon.intTfProfile`: thread CPU time per stage summed over the threads, so with 2 threads
 * the stages add up to about twice the wall time on a quiet machine); 'one-call-scalar' = the same one-call forward
 * with the scalar loops (`addon.intTfLoops(false)`: under LOWBIT_ISA=avx2, scalar against AVX2 loops in one run).
 * Their logits are checked equal at every batch.
 * The model: a converted untrained w8a8 TransformerLM of the CLI's shape (vocabulary 2000, width 80,
 * 4 heads, MLP 320, 2 blocks, context 8; QAT steps from one training-mode forward on random ids),
 * batches of 256 random windows, logits at every position (`logitsAll`, as the seq-inference bench;
 * `--positions last`: `logits`, the last position only). Prints the median ms per batch (wall, per call or stage,
 * and the process CPU time around each forward, all threads, user + system); writes nothing.
 *
 *   nice -n 10 node --import tsx bench/irnn/transformer-profile.ts [--batches 40] [--context 8] [--threads 2] [--loops scalar|avx512|one-call-scalar|one-call] [--positions all|last]
 */
import { noGrad } from '../../src/autograd/index.ts';
import { loadAddon } from '../../src/backend/native/load.ts';
import type { NativeAddon } from '../../src/backend/native/addon.ts';
import { setNativeThreads } from '../../src/backend/native/index.ts';
import { TransformerLM } from '../../src/nn/index.ts';
import { convertTransformerLM } from '../../src/quant/irnn/index.ts';
import { setIntTransformerFusedCalls, setIntTransformerFusedForward } from '../../src/quant/irnn/transformer.ts';
import { prepareTransformerQat, transformerQatConfig } from '../../src/quant/transformer/qat.ts';
import { Rng, Tensor } from '../../src/tensor/index.ts';
import { flag, numberFlag } from '../flags.ts';

const batches = numberFlag('batches', 40, { integer: true, min: 1 });
const context = numberFlag('context', 8, { integer: true, min: 1 });
const threads = numberFlag('threads', 2, { integer: true, min: 1 });
const positions = flag('positions') ?? 'all';
if (positions !== 'all' && positions !== 'last') throw new Error(`--positions must be all or last, got '${positions}'`);
const forward = (x: Int32Array): Float32Array => (positions === 'all' ? int.logitsAll(x, batchSize) : int.logits(x, batchSize));
const batchSize = 256;
const [V, E, F] = [2000, 80, 320];

const addon = loadAddon();
if (!addon?.intTfAttention) {
  console.log('skip: the native addon with the integer Transformer loops is not loaded');
  process.exit(0);
}
setNativeThreads(threads);

const model = new TransformerLM({ vocabSize: V, maxContext: context, embedDim: E, mlpDim: F, numLayers: 2, numHeads: 4, activation: 'gelu-tanh', rng: new Rng(1) });
prepareTransformerQat(model, transformerQatConfig('w8a8')!);
const rng = new Rng(2);
const ids = (n: number): Tensor => new Tensor(Int32Array.from({ length: n * context }, () => Math.floor(rng.uniform() * V)), [n, context]);
model.train();
noGrad(() => model.forward(ids(16)));
model.eval();
const int = convertTransformerLM(model, [ids(64)]);

// Wrap the addon's functions with timers (the model calls them through this very object).
type Kind = 'scalar' | 'avx512' | 'one-call-scalar' | 'one-call';
const only = flag('loops');
if (only !== undefined && only !== 'scalar' && only !== 'avx512' && only !== 'one-call-scalar' && only !== 'one-call') {
  throw new Error(`--loops must be scalar, avx512, one-call-scalar or one-call, got '${only}'`);
}
const available: Kind[] = [...(['scalar'] as Kind[]), ...(addon.intTfLoops?.(true) === 'avx512' ? ['avx512'] as Kind[] : []),
  ...(addon.intTfForward ? ['one-call-scalar', 'one-call'] as Kind[] : [])];
const kinds: Kind[] = available.filter((k) => only === undefined || k === only);
if (kinds.length === 0) throw new Error(`--loops ${only}: this machine does not run those loops`);
/** Per kind, per call key: seconds of each timed batch. */
const samples = new Map<string, number[]>();
let current = new Map<string, number>();
const names = ['gemmInt8Packed', 'intTfEmbed', 'intTfLayerNorm', 'intTfRequantize', 'intTfGelu', 'intTfAttention', 'intTfRequantizeGelu', 'intTfHead'] as const;
const table = addon as unknown as Record<string, (...args: unknown[]) => unknown>;
for (const name of names) {
  const inner = table[name];
  if (!inner) continue;
  table[name] = (...args: unknown[]): unknown => {
    const start = process.hrtime.bigint();
    const result = inner(...args);
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    // Requantizations by mode (0: int32 codes, 1: residual add, 2: int8 codes) and width.
    let key: string = name;
    if (name === 'intTfRequantize') key = `${name} mode ${(args[0] as Int32Array)[4]} R=${(args[0] as Int32Array)[1]}`;
    else if (name === 'gemmInt8Packed') key = `${name} N=${args[1]}`;
    current.set(key, (current.get(key) ?? 0) + seconds);
    return result;
  };
}

const inputs = Array.from({ length: 4 }, () => ids(batchSize).data as Int32Array);
/**
 * 'scalar': the loops and calls of before (per-op calls, scalar loops); 'avx512': the fused calls and the AVX-512 loops;
 * 'one-call-scalar': intTfForward with the scalar loops; 'one-call': intTfForward with the vector loops of the ISA.
 */
function use(kind: Kind): void {
  addon!.intTfLoops!(kind !== 'scalar' && kind !== 'one-call-scalar');
  setIntTransformerFusedCalls(kind !== 'scalar');
  setIntTransformerFusedForward(kind === 'one-call' || kind === 'one-call-scalar');
  addon!.intTfProfile?.(kind === 'one-call' || kind === 'one-call-scalar');
}
const STAGES = ['embed', 'LayerNorm (ln1, ln2, lnFinal)', 'qkv GEMM', 'qkv requantize (int8)', 'attention', 'proj GEMM', 'proj requantize + residual',
  'fc1 GEMM', 'fc1 requantize + i-GELU', 'fc2 GEMM', 'fc2 requantize + residual', 'head GEMM', 'head float logits'] as const;
for (const kind of kinds) {
  use(kind);
  for (let i = 0; i < 3; i++) forward(inputs[i % 4]!); // warm-up (JIT, buffers, packing)
}
const logits: Record<string, Float32Array> = {};
for (let i = 0; i < batches; i++) {
  for (const kind of kinds) {
    use(kind);
    current = new Map();
    const cpuStart = process.cpuUsage();
    const start = performance.now();
    logits[kind] = forward(inputs[i % 4]!);
    const wall = (performance.now() - start) / 1000;
    const cpu = process.cpuUsage(cpuStart);
    samples.set(`${kind}\tprocess CPU (user + system, all threads)`, [...(samples.get(`${kind}\tprocess CPU (user + system, all threads)`) ?? []), (cpu.user + cpu.system) / 1e6]);
    if ((kind === 'one-call' || kind === 'one-call-scalar') && addon.intTfProfile) {
      const stages = addon.intTfProfile(true);
      let inStages = 0;
      STAGES.forEach((name, j) => {
        inStages += stages[j]!;
        current.set(`stage: ${name}`, stages[j]!);
      });
      current.set('stages summed over threads', inStages);
      current.delete('intTfForward');
      for (const [key, seconds] of current) {
        const k = `${kind}\t${key}`;
        samples.set(k, [...(samples.get(k) ?? []), seconds]);
      }
      samples.set(`${kind}\twall`, [...(samples.get(`${kind}\twall`) ?? []), wall]);
      continue;
    }
    let inCalls = 0;
    for (const [key, seconds] of current) {
      inCalls += seconds;
      const k = `${kind}\t${key}`;
      samples.set(k, [...(samples.get(k) ?? []), seconds]);
    }
    samples.set(`${kind}\twall`, [...(samples.get(`${kind}\twall`) ?? []), wall]);
    samples.set(`${kind}\tTypeScript around the calls`, [...(samples.get(`${kind}\tTypeScript around the calls`) ?? []), wall - inCalls]);
  }
  for (const k of kinds) if (logits[k]!.some((v, j) => v !== logits[kinds[0]!]![j])) throw new Error(`batch ${i}: the ${k} forward gave other logits than the ${kinds[0]}`);
}
use(kinds.includes('one-call') ? 'one-call' : 'avx512');
addon.intTfProfile?.(false);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

const ms = (kind: Kind, key: string): number => median(samples.get(`${kind}\t${key}`) ?? [0]) * 1000;
const order = (k: string): number => (k.startsWith('stage: ') ? 1 : k === 'stages summed over threads' ? 2 : k.startsWith('process CPU') ? 3 : 0);
const keys = [...new Set([...samples.keys()].map((k) => k.split('\t')[1]!))].filter((k) => k !== 'wall').sort((a, b) => order(a) - order(b) || (order(a) === 1 ? STAGES.indexOf(a.slice(7) as typeof STAGES[number]) - STAGES.indexOf(b.slice(7) as typeof STAGES[number]) : Math.max(...kinds.map((k) => ms(k, b))) - Math.max(...kinds.map((k) => ms(k, a)))));
const tokens = batchSize * context;
console.log(`${batches} batches of ${batchSize} windows x ${context} tokens, ${threads} thread(s), GEMM ${addon.intKernelsInfo?.().int8 ?? '?'}, load ${(await import('node:os')).loadavg().map((l) => l.toFixed(1)).join(' ')}`);
const ratioOf = kinds.length > 1 ? [kinds[0]!, kinds.at(-1)!] as const : null;
console.log(`| call or stage (ms per batch, median) | ${kinds.join(' | ')} |${ratioOf ? ` ${ratioOf[0]} / ${ratioOf[1]} |` : ''}`);
console.log(`| --- |${kinds.map(() => ' ---: |').join('')}${ratioOf ? ' ---: |' : ''}`);
const ran = (kind: Kind, key: string): boolean => samples.has(`${kind}\t${key}`);
for (const key of [...keys, 'wall']) {
  const cells = kinds.map((k) => (ran(k, key) ? `${ms(k, key).toFixed(3)} (${(ms(k, key) / ms(k, 'wall') * 100).toFixed(0)} %)` : '—'));
  const ratio = ratioOf && ran(ratioOf[0], key) && ran(ratioOf[1], key) ? `${(ms(ratioOf[0], key) / ms(ratioOf[1], key)).toFixed(2)}x` : '—';
  console.log(`| ${key} | ${cells.join(' | ')} |${ratioOf ? ` ${ratio} |` : ''}`);
}
const best = (kind: Kind): number => Math.min(...samples.get(`${kind}\twall`)!) * 1000;
console.log(`fastest batch (ms): ${kinds.map((k) => `${k} ${best(k).toFixed(2)}`).join(', ')}`);
console.log(`tokens/s (median batch): ${kinds.map((k) => `${k} ${Math.round(tokens / (ms(k, 'wall') / 1000)).toLocaleString('en-US')}`).join(', ')}`);
console.log(`tokens per process CPU second (median batch): ${kinds.map((k) => `${k} ${Math.round(tokens / (ms(k, 'process CPU (user + system, all threads)') / 1000)).toLocaleString('en-US')}`).join(', ')}`);
