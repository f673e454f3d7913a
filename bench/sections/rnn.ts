/**
 * One training step of a recurrent model, lowbit (native backend) against PyTorch in the same run:
 * nn.LSTM(16, H, batchFirst) + Linear(H, 10) on the last time step's output, batch 32, 32 time
 * steps, cross-entropy, Adam lr 1e-3; the same with nn.GRU. H = 64 (30 steps per repeat) and
 * H = 256 (10 steps per repeat). And the float Transformer LM of the `seq-inference` section
 * (vocabulary 2000, width 80, 2 blocks, 4 heads, MLP 320, tanh GELU) at batch 256 × 8 tokens:
 * forwardAll, cross-entropy over every position, Adam lr 1e-3, with the same weights and data on both
 * sides (5 steps per repeat). Unit: milliseconds per step (lower is better); ratio = PyTorch
 * time / lowbit time (> 1 = lowbit faster).
 *
 * Scheme (robust on a shared 2-core machine): PyTorch runs as one long-lived python process
 * (bench/peers/torch_rnn.py) driven over stdin/stdout and idle between requests. After untimed
 * warm-up steps on both sides, each round times one lowbit repeat and one PyTorch repeat of the
 * same number of steps, the order alternating from round to round (A B, B A, ...), so that load
 * drifting on the machine hits both sides alike. Around every repeat the machine's busy time
 * (/proc/stat) minus the side's own CPU time gives the load of other processes; a round is quiet
 * when both repeats saw less than 10 % of the cores busy elsewhere, because such load slows
 * PyTorch's OpenMP threads far more than lowbit (see `run`) and would decide the ratio; a round
 * starts only once the machine is quiet. Rounds run until 2 × repeats − 1 of them (9, or 5 with
 * --quick) are quiet or the section's time budget (~62 s, 25 s quick) is spent; the figure of each
 * side is the median of the quiet rounds, and a case with fewer than 3 quiet rounds is skipped as
 * "machine busy". Every round's timings, background load and both sides' process CPU time per step,
 * and the per-round PyTorch / lowbit ratios, are kept in the result's details. PyTorch gets
 * `torch.set_num_threads(<lowbit's thread count>)` with OPENBLAS_NUM_THREADS=1; a missing python or
 * torch turns its rows into "skipped".
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { crossEntropy, manualSeed, narrow, nativeInfo, nn, noGrad, randn, reshape, Rng, tensor, Tensor } from '../../src/index.ts';
import { Adam } from '../../src/optim/index.ts';
import { preferThroughputGc } from '../../src/train/gc.ts';
import { measured, median, now, skippedMeasurement, tick, type Measurement, type Section, type SectionContext, type SectionOutput } from '../lib.ts';
import { cpuTimes } from '../machine.ts';
import { TorchRnnPeer, type TorchRnnSpec, type TorchTransformerSpec } from '../peers/torch-rnn.ts';
import { LAYER_NORM_EPS, peerFiles, SEQ_SHAPES, TRANSFORMER_ACTIVATION, transformerLm } from '../seq-inference/models.ts';
import { benchBackends, implName, nativeMissingReason, withBackend } from '../workloads.ts';

/** The shared workload: everything but the cell kind and the hidden size. */
export const RNN_WORKLOAD = { input: 16, classes: 10, batch: 32, seq: 32, lr: 1e-3, warmup: 5 } as const;

export interface RnnCase {
  readonly kind: 'LSTM' | 'GRU';
  readonly hidden: number;
  /** Timed training steps per repeat (per side, per round). */
  readonly steps: number;
}

export const RNN_CASES: readonly RnnCase[] = [
  { kind: 'LSTM', hidden: 64, steps: 30 },
  { kind: 'GRU', hidden: 64, steps: 30 },
  { kind: 'LSTM', hidden: 256, steps: 10 },
  { kind: 'GRU', hidden: 256, steps: 10 },
];

export function rnnCaseLabel(c: Pick<RnnCase, 'kind' | 'hidden'>): string {
  const w = RNN_WORKLOAD;
  return `${c.kind}(${w.input}, ${c.hidden}) + Linear(${c.hidden}, ${w.classes}) training step, batch ${w.batch} × ${w.seq} time steps`;
}

/**
 * lowbit's training step of one case on the current backend: forward, cross-entropy on the last
 * time step, zero grad, backward, Adam step. Model, data and optimizer are built once (seed 0).
 */
export function lowbitRnnStepper(c: Pick<RnnCase, 'kind' | 'hidden'>): () => void {
  const { input, classes, batch, seq, lr } = RNN_WORKLOAD;
  manualSeed(0);
  const rnn = c.kind === 'GRU' ? new nn.GRU(input, c.hidden, { batchFirst: true }) : new nn.LSTM(input, c.hidden, { batchFirst: true });
  const head = new nn.Linear(c.hidden, classes);
  const optimizer = new Adam([...rnn.parameters(), ...head.parameters()], { lr });
  const x = randn([batch, seq, input]);
  const y = tensor(Array.from({ length: batch }, (_, i) => i % classes), [batch], 'int32');
  return () => {
    const [out] = rnn.forward(x);
    const loss = crossEntropy(head.forward(reshape(narrow(out, 1, seq - 1, 1), [batch, c.hidden])), y);
    optimizer.zeroGrad();
    loss.backward();
    optimizer.step();
  };
}

/** The Transformer LM training step: the `seq-inference` section's float model (SEQ_SHAPES), every-position loss. */
export const TRANSFORMER_STEP = { batch: 256, steps: 5, lr: 1e-3, warmup: 3 } as const;

export function transformerStepLabel(): string {
  const S = SEQ_SHAPES;
  return `Transformer LM (width ${S.tEmbed}, ${S.tLayers} blocks, ${S.tHeads} heads, MLP ${S.tMlp}, vocabulary ${S.vocab}) training step, batch ${TRANSFORMER_STEP.batch} × ${S.context} tokens, loss at every position`;
}

/**
 * lowbit's Transformer LM training step on the current backend (forwardAll, cross-entropy over every
 * position, zero grad, backward, Adam) on fixed random ids and targets (seed 0), with the files the
 * PyTorch peer loads the same model and data from (written into `dir`) and the loss of the first
 * forward, before any step. `fusedLoss` false: the composed logSoftmax + nllLoss (for before/after comparisons).
 */
export function lowbitTransformerStepper(dir: string, fusedLoss = true): { step: () => void; firstLoss: number; files: { weights: string; ids: string; targets: string } } {
  const S = SEQ_SHAPES;
  const { batch, lr } = TRANSFORMER_STEP;
  const model = transformerLm(S, 0);
  const rng = new Rng(0);
  const draw = (): Tensor => new Tensor(Int32Array.from({ length: batch * S.context }, () => Math.floor(rng.uniform() * S.vocab)), [batch, S.context]);
  const ids = draw();
  const targets = reshape(draw(), [batch * S.context]);
  const files = peerFiles(dir, 'transformer-step', model, ids);
  const targetsPath = join(dir, 'transformer-step.targets.i32');
  writeFileSync(targetsPath, new Uint8Array(Int32Array.from(targets.data).buffer));
  model.train();
  const optimizer = new Adam(model.parameters(), { lr });
  // The CLI's every-position objective: the fused cross-entropy (lm-objective.ts), as PyTorch's cross_entropy.
  const loss = (): Tensor => crossEntropy(reshape(model.forwardAll(ids), [batch * S.context, S.vocab]), targets, 'mean', { fused: fusedLoss });
  const firstLoss = noGrad(() => loss().data[0]!);
  return {
    step: () => {
      const l = loss();
      optimizer.zeroGrad();
      l.backward();
      optimizer.step();
    },
    firstLoss,
    files: { ...files, targets: targetsPath },
  };
}

/** One timed repeat of one side. */
interface Repeat {
  /** Wall milliseconds per step. */
  readonly ms: number;
  /** Process CPU milliseconds per step (all threads of that side's process). */
  readonly cpuMs: number;
  /**
   * Busy fraction of all cores during the repeat spent by other processes (machine busy time from
   * /proc/stat minus this side's own CPU time); null where /proc/stat is unavailable.
   */
  readonly background: number | null;
}

interface Round {
  readonly lowbit: Repeat | null;
  readonly torch: Repeat | null;
  /** Both sides ran with background load under QUIET. */
  readonly quiet: boolean;
}

/** Background load (fraction of all cores) under which a round counts as quiet. */
const QUIET = 0.1;
/** Quiet rounds a case needs for a figure. */
const MIN_ROUNDS = 3;

/**
 * Times `fn` (which reports wall and CPU ms per step of `steps` steps) and the machine's busy time
 * around it; with `peerCpu` the CPU time `fn` reports is the peer's, and counts as ours too.
 */
async function timedRepeat(steps: number, fn: () => Promise<{ ms: number; cpuMs: number }>, peerCpu: boolean): Promise<Repeat> {
  const cores = availableParallelism();
  const a = cpuTimes();
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const r = await fn();
  const wallMs = performance.now() - t0;
  const c = process.cpuUsage(c0);
  const b = cpuTimes();
  let background: number | null = null;
  if (a && b && b.total > a.total) {
    const ownMs = (c.user + c.system) / 1000 + (peerCpu ? r.cpuMs * steps : 0);
    background = Math.max(0, (b.busy - a.busy) / (b.total - a.total) - ownMs / (cores * wallMs));
  }
  return { ...r, background };
}

/** Wall and process-CPU milliseconds per step over `steps` calls of `step`. */
function timeSteps(step: () => void, steps: number): { ms: number; cpuMs: number } {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) step();
  const ms = (performance.now() - t0) / steps;
  const c = process.cpuUsage(c0);
  return { ms, cpuMs: (c.user + c.system) / 1000 / steps };
}

const errorText = (e: unknown): string => (e instanceof Error ? e.message : String(e));

/** Background load over `seconds` while this process sleeps (the peer idles too); null without /proc/stat. */
async function idleLoad(seconds: number): Promise<number | null> {
  const a = cpuTimes();
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  const b = cpuTimes();
  return a && b && b.total > a.total ? (b.busy - a.busy) / (b.total - a.total) : null;
}

/** Waits until other processes leave the cores below QUIET, or `deadline` (seconds, `now()`) passes. */
async function waitQuiet(deadline: number): Promise<boolean> {
  for (;;) {
    const load = await idleLoad(0.2);
    if (load === null || load < QUIET) return true;
    if (now() >= deadline) return false;
  }
}

async function run(ctx: SectionContext): Promise<SectionOutput> {
  // The GC policy of lowbit's training jobs, as train-throughput sets it (process-wide, so the
  // figures do not depend on which sections ran before).
  preferThroughputGc();
  const haveNative = benchBackends().includes('native');
  const threads = nativeInfo()?.threads ?? ctx.threads;
  // Load from other processes hits PyTorch's OpenMP threads far harder than lowbit (measured here:
  // LSTM H = 64 5.7 ms/step on a quiet machine, 20-75 ms while another process kept the cores
  // busy; H = 256 36 -> 300-840 ms), so only quiet rounds make the figures, and rounds wait for
  // a quiet machine instead of being spent under load.
  const wantQuiet = 2 * ctx.repeats - 1;
  const budget = ctx.quick ? 25 : 62;
  const measurements: Measurement[] = [];
  const summary: Record<string, unknown>[] = [];
  let noisyCases = 0;

  ctx.log(`starting the PyTorch peer (${threads} threads)`);
  const started = await TorchRnnPeer.start(threads);
  let peer: TorchRnnPeer | null = typeof started === 'string' ? null : started;
  let peerMissing = typeof started === 'string' ? started : '';
  if (peerMissing) ctx.log(`PyTorch skipped: ${peerMissing}`);
  const torchImpl = peer ? `PyTorch ${peer.info.torch}` : 'PyTorch';
  const sectionStart = now();

  const dir = mkdtempSync(join(tmpdir(), 'lowbit-bench-rnn-'));
  // The cases: the four RNN ones and the Transformer LM step (same model and data on both sides, its
  // first loss compared before timing).
  interface StepCase {
    readonly key: string;
    readonly group: string;
    readonly steps: number;
    readonly warmup: number;
    /** lowbit's step (built on the native backend) and the peer's spec. */
    readonly build: () => { step: () => void; spec: TorchRnnSpec | TorchTransformerSpec; firstLoss: number | null };
  }
  const cases: StepCase[] = [
    ...RNN_CASES.map((c): StepCase => ({
      key: `${c.kind.toLowerCase()}-h${c.hidden}`, group: rnnCaseLabel(c), steps: c.steps, warmup: RNN_WORKLOAD.warmup,
      build: () => ({ step: lowbitRnnStepper(c), spec: { kind: c.kind, hidden: c.hidden, ...RNN_WORKLOAD, seed: 0 }, firstLoss: null }),
    })),
    {
      key: 'transformer-lm', group: transformerStepLabel(), steps: TRANSFORMER_STEP.steps, warmup: TRANSFORMER_STEP.warmup,
      build: () => {
        const { step, firstLoss, files } = lowbitTransformerStepper(dir);
        const S = SEQ_SHAPES;
        const spec: TorchTransformerSpec = {
          kind: 'transformer', ...files, batch: TRANSFORMER_STEP.batch, seq: S.context, heads: S.tHeads, activation: TRANSFORMER_ACTIVATION,
          eps: LAYER_NORM_EPS, lr: TRANSFORMER_STEP.lr, warmup: TRANSFORMER_STEP.warmup,
        };
        return { step, spec, firstLoss };
      },
    },
  ];
  const lossChecks: string[] = [];

  try {
    for (const [index, c] of cases.entries()) {
      const key = c.key;
      const group = c.group;
      const torchId = `${key}/torch`;
      const base = { id: `${key}/lowbit-native`, group, impl: implName('native'), unit: 'ms/step', higherIsBetter: false, peers: [torchId] };
      const tbase = { id: torchId, group, impl: torchImpl, unit: 'ms/step', higherIsBetter: false };
      // Built on the native backend even without the addon's kernels (then only the peer's spec and files are used).
      const built = await withBackend(haveNative ? 'native' : 'reference', async () => c.build());
      const step = haveNative ? built.step : null;
      let caseTorchMissing = '';
      if (peer) {
        try {
          const torchLoss = await peer.init(key, built.spec);
          if (built.firstLoss !== null && torchLoss !== null) {
            const diff = Math.abs(torchLoss - built.firstLoss);
            lossChecks.push(`${key}: first loss lowbit ${built.firstLoss.toFixed(6)}, PyTorch ${torchLoss.toFixed(6)} (|Δ| ${diff.toExponential(1)})`);
            if (!(diff <= 1e-4 * Math.abs(built.firstLoss))) caseTorchMissing = `not the same model: first loss ${torchLoss} against lowbit's ${built.firstLoss}`;
          }
        } catch (e) {
          peerMissing = errorText(e);
          await peer.close();
          peer = null;
        }
      }
      if (step) {
        await withBackend('native', async () => {
          for (let i = 0; i < c.warmup; i++) step();
        });
      }

      // Rounds until `wantQuiet` quiet ones or this case's share of the budget is spent (time a
      // case leaves unused goes to the next ones).
      const deadline = sectionStart + (budget * (index + 1)) / cases.length;
      const rounds: Round[] = [];
      const caseStart = now();
      let waited = 0;
      const casePeer = caseTorchMissing ? null : peer;
      while ((step || casePeer) && rounds.filter((r) => r.quiet).length < wantQuiet && now() < deadline) {
        const w0 = now();
        const quietNow = await waitQuiet(deadline);
        waited += now() - w0;
        if (!quietNow) break;
        let lowbit: Repeat | null = null;
        let torch: Repeat | null = null;
        const order = rounds.length % 2 === 0 ? (['lowbit', 'torch'] as const) : (['torch', 'lowbit'] as const);
        for (const side of order) {
          await tick();
          if (side === 'lowbit' && step) lowbit = await withBackend('native', () => timedRepeat(c.steps, async () => timeSteps(step, c.steps), false));
          if (side === 'torch' && peer && !caseTorchMissing) {
            const p = peer;
            try {
              torch = await timedRepeat(c.steps, () => p.repeat(key, c.steps), true);
            } catch (e) {
              // A peer that failed once is not trusted for the rest of the section.
              peerMissing = errorText(e);
              ctx.log(`PyTorch failed: ${peerMissing}`);
              await p.close();
              peer = null;
            }
          }
        }
        const quiet = [lowbit, torch].every((x) => x === null || x.background === null || x.background < QUIET);
        rounds.push({ lowbit, torch, quiet });
        const fmt = (x: Repeat | null): string => (x ? `${x.ms.toFixed(2)} ms (others ${x.background === null ? '?' : `${(x.background * 100).toFixed(0)} %`})` : '—');
        ctx.log(`${key} round ${rounds.length}: lowbit ${fmt(lowbit)}, PyTorch ${fmt(torch)}${quiet ? '' : ' [busy: not used]'}`);
      }
      if (!peer || caseTorchMissing) for (const r of rounds) Object.assign(r, { torch: null });

      const used = rounds.filter((r) => r.quiet);
      const lb = used.flatMap((r) => (r.lowbit ? [r.lowbit] : []));
      const pt = used.flatMap((r) => (r.torch ? [r.torch] : []));
      const pairs = used.flatMap((r) => (r.lowbit && r.torch ? [r.torch.ms / r.lowbit.ms] : []));
      const allMedian = (side: 'lowbit' | 'torch'): string => {
        const v = rounds.flatMap((r) => (r[side] ? [r[side]!.ms] : []));
        return v.length ? `${median(v).toFixed(2)} ms` : 'n/a';
      };
      const busyReason =
        `machine busy: ${used.length} quiet round(s) of ${rounds.length} (need ${MIN_ROUNDS}) in ${(now() - caseStart).toFixed(0)} s, ${waited.toFixed(0)} s of it waiting for other processes to leave the cores` +
        (rounds.length ? `; medians of all rounds: lowbit ${allMedian('lowbit')}, PyTorch ${allMedian('torch')}` : '');
      const noisy = used.length < MIN_ROUNDS;
      if (noisy) {
        noisyCases++;
        ctx.log(`${key}: ${busyReason}`);
      }
      const details = (side: 'lowbit' | 'torch') => ({
        stepsPerRepeat: c.steps,
        warmupSteps: c.warmup,
        rounds: rounds.length,
        quietRounds: used.length,
        waitedSeconds: waited,
        cpuMsPerStep: used.map((r) => r[side]?.cpuMs ?? null),
        allRoundsMs: rounds.map((r) => r[side]?.ms ?? null),
        allRoundsBackground: rounds.map((r) => r[side]?.background ?? null),
      });
      if (!step) measurements.push(skippedMeasurement(base, nativeMissingReason()));
      else if (noisy) measurements.push(skippedMeasurement({ ...base, details: details('lowbit') }, busyReason));
      else measurements.push(measured({ ...base, details: { ...details('lowbit'), pairRatios: pairs, medianPairRatio: pairs.length ? median(pairs) : null } }, lb.map((x) => x.ms)));
      if (pt.length >= MIN_ROUNDS) measurements.push(measured({ ...tbase, details: details('torch') }, pt.map((x) => x.ms)));
      else measurements.push(skippedMeasurement({ ...tbase, details: details('torch') }, caseTorchMissing || peerMissing || busyReason));
      summary.push({
        case: key,
        rounds: rounds.length,
        quietRounds: used.length,
        waitedSeconds: waited,
        lowbitMs: lb.length ? median(lb.map((x) => x.ms)) : null,
        torchMs: pt.length ? median(pt.map((x) => x.ms)) : null,
        lowbitCpuMs: lb.length ? median(lb.map((x) => x.cpuMs)) : null,
        torchCpuMs: pt.length ? median(pt.map((x) => x.cpuMs)) : null,
        medianPairRatio: pairs.length ? median(pairs) : null,
      });
    }
  } finally {
    await peer?.close();
    rmSync(dir, { recursive: true, force: true });
  }

  const w = RNN_WORKLOAD;
  const notes = [
    `Each step: forward over all ${w.seq} time steps, Linear on the last one, cross-entropy, zero grad, backward, Adam step (lr ${w.lr}); one fixed random batch [${w.batch}, ${w.seq}, ${w.input}], labels i mod ${w.classes}.`,
    `${w.warmup} untimed warm-up steps per side, then rounds: each round times one lowbit repeat and one PyTorch repeat of the same number of steps (${RNN_CASES.map((c) => `${c.kind} H = ${c.hidden}: ${c.steps}`).join(', ')}), in alternating order. PyTorch is one long-lived python process driven over stdin/stdout, idle while lowbit runs.`,
    `Transformer LM step: the \`seq-inference\` section's float model (default init, seed 0) with the same weights on both sides (lowbit's state dict as safetensors, loaded strictly into torch modules with lowbit's names; bench/peers/torch_rnn.py), fixed random ids [${TRANSFORMER_STEP.batch}, ${SEQ_SHAPES.context}] and every-position targets, cross-entropy over all ${TRANSFORMER_STEP.batch * SEQ_SHAPES.context} positions, Adam lr ${TRANSFORMER_STEP.lr}; ${TRANSFORMER_STEP.steps} steps per repeat, ${TRANSFORMER_STEP.warmup} warm-up steps. Same model checked by the loss of the first forward (a PyTorch row off by more than 1e-4 relative is skipped): ${lossChecks.join('; ') || 'not checked (no peer)'}.`,
    `Only quiet rounds count: a round starts once other processes use < ${QUIET * 100} % of the cores, and counts when that still held during both repeats (/proc/stat busy time minus each side's own CPU time). Load from other processes slows PyTorch's OpenMP threads by 5-15× and lowbit far less, so it would decide the ratio. Rounds run until ${wantQuiet} are quiet or the section's ~${budget} s budget is spent; a case with fewer than ${MIN_ROUNDS} quiet rounds is skipped as "machine busy"${noisyCases ? ` (${noisyCases} this run)` : ''}. Repeats = the quiet rounds. Ratio = PyTorch time / lowbit time (> 1 = lowbit faster). Every round with its background load and both sides' CPU time is in bench/results/rnn.json.`,
    `lowbit: native backend, ${threads} threads, GC policy of its training jobs (\`preferThroughputGc()\`). PyTorch: ${ctx.machine.torch}, torch.set_num_threads(${threads}), OPENBLAS_NUM_THREADS=1; ${ctx.machine.torchBlas || 'BLAS unknown'}.`,
  ];
  return { measurements, notes, raw: { threads, quietThreshold: QUIET, budgetSeconds: budget, cases: summary } };
}

export const rnn: Section = {
  name: 'rnn',
  title: 'LSTM / GRU training step vs PyTorch',
  run,
};
