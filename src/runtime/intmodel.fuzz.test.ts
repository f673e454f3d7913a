/**
 * Fuzz test of IntModel DAG files (graph version 2): a converted residual network's .lowbit graph
 * with seeded random mutations of the node references (`inputs`), names, order, add-node fields and
 * the graph version. Each file must end in a typed error — LowbitFormatError (container),
 * IntGraphError (graph validation) or the loader's 'not an IntModel' / 'IntModel .lowbit' Error —
 * or load into a model that runs (or refuses the input with an 'IntModel…' Error), each within
 * 100 ms. LOWBIT_FUZZ_REPORT=1 prints the statistics.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { noGrad } from '../autograd/engine.ts';
import { resnet8 } from '../nn/index.ts';
import { manualSeed, randn } from '../tensor/index.ts';
import { prepareQat } from '../quant/qat/index.ts';
import { qconfigFor } from '../quant/config/qconfig.ts';
import { decodeLowbit, encodeLowbit, LowbitFormatError, type LowbitModel, type LowbitNode } from '../format/lowbit.ts';
import { fuzzRng, timeFuzzCase, type FuzzTiming } from '../../test/fuzz-timing.ts';
import { convert } from './convert.ts';
import { intModelFromLowbit, intModelToLowbit } from './io.ts';
import { IntGraphError } from './validate.ts';

const FIELDS = ['inputs', 'inputs', 'inputs', 'name', 'op', 'multipliers', 'shift', 'lo', 'hi', 'inputZeroPoints', 'inputScales', 'zeroPoint', 'scale', 'fracBits', 'startDim'];

type Outcome = 'format' | 'graph' | 'loader' | 'ran' | 'refused-input';

test('fuzz: 3,000 mutated IntModel DAG files end in a typed error or a model that runs, each within 100 ms', () => {
  manualSeed(0);
  const model = resnet8({ channels: [2, 4, 4] });
  const x = randn([4, 1, 8, 8]);
  prepareQat(model, { default: qconfigFor('w8a8', 'ste') });
  model.train();
  for (let i = 0; i < 2; i++) noGrad(() => model.forward(x));
  model.eval();
  const im = convert(model, { sample: x });
  assert.equal(im.graph.version, 2);
  const base = intModelToLowbit(im);
  const names = base.graph.map((n) => String((n as { name?: unknown }).name));
  const random = fuzzRng(20261123);
  const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)]!;
  const values = (): unknown => {
    const other = pick(names);
    return pick<unknown>([
      [other], [other, pick(names)], [], ['nope'], [other, other, other], other, null, -1, 0, 1, 62, 63, 2 ** 31, -(2 ** 31) - 1, 1e300,
      'str', [1], [1, 2], [2 ** 31, 0], [0.5, 0.5], {}, true, undefined,
    ]);
  };
  const timing: FuzzTiming & { outcomes: Map<Outcome, number> } = { count: 0, maxMs: 0, slowest: '', rawMaxMs: 0, retimed: 0, totalMs: 0, outcomes: new Map() };
  for (let i = 0; i < 3000; i++) {
    const graph = base.graph.map((n) => JSON.parse(JSON.stringify(n)) as Record<string, unknown>);
    let version: unknown = 2;
    const edits = 1 + Math.floor(random() * 3);
    for (let e = 0; e < edits; e++) {
      const r = random();
      if (r < 0.7) {
        const node = pick(graph);
        const field = pick(FIELDS);
        const v = values();
        if (v === undefined) delete node[field];
        else node[field] = v;
      } else if (r < 0.8) {
        const a = Math.floor(random() * graph.length);
        const b = Math.floor(random() * graph.length);
        [graph[a], graph[b]] = [graph[b]!, graph[a]!];
      } else if (r < 0.9) {
        graph.splice(Math.floor(random() * graph.length), 1);
      } else if (r < 0.95) {
        const k = Math.floor(random() * graph.length);
        graph.splice(k, 0, JSON.parse(JSON.stringify(graph[k])) as Record<string, unknown>);
      } else version = pick([1, 3, '2', null]);
    }
    const file: LowbitModel = { ...base, graph: graph as unknown as LowbitNode[], metadata: { ...base.metadata, intModel: { ...(base.metadata!.intModel as object), version } } };
    const label = `mutation #${i}`;
    const outcome = timeFuzzCase(timing, label, 'a typed error or a model', (): Outcome => {
      let bytes: Uint8Array;
      try {
        bytes = encodeLowbit(file);
      } catch (err) {
        if (err instanceof LowbitFormatError) return 'format';
        throw err;
      }
      let m;
      try {
        m = intModelFromLowbit(decodeLowbit(bytes));
      } catch (err) {
        if (err instanceof LowbitFormatError) return 'format';
        if (err instanceof IntGraphError) return 'graph';
        if (err instanceof Error && err.constructor === Error && /^(not an IntModel|IntModel \.lowbit)/.test(err.message)) return 'loader';
        throw err;
      }
      try {
        const out = m.run(x.data as Float32Array, 4);
        assert.ok(out instanceof Float32Array);
        return 'ran';
      } catch (err) {
        if (err instanceof Error && err.constructor === Error && /^IntModel/.test(err.message)) return 'refused-input';
        throw err;
      }
    });
    timing.outcomes.set(outcome, (timing.outcomes.get(outcome) ?? 0) + 1);
  }
  if (process.env.LOWBIT_FUZZ_REPORT) console.log(`intmodel fuzz: ${timing.count} files, outcomes ${JSON.stringify([...timing.outcomes])}, max ${timing.maxMs.toFixed(2)} ms (${timing.slowest})`);
  assert.equal(timing.count, 3000);
  assert.ok((timing.outcomes.get('graph') ?? 0) > 1000, JSON.stringify([...timing.outcomes]));
});
