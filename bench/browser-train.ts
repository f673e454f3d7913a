/**
 * LeNet-5 training throughput in headless Chromium: the browser bundle (src/browser.ts, built by
 * esbuild) trains LeNet-5 at batch 64 (SGD with momentum, random MNIST-shaped batches; fp32 speed
 * does not depend on pixel values) and the default `lowbit train` job (LeNet-5 W4A4 LSQ QAT, Adam
 * lr 2e-3 with quantizer parameters at 0.1x, batch 64, the same random batches) on the 'wasm'
 * backend on one and on two threads (the page is served cross-origin isolated, COOP + COEP, so the
 * wasm backend can start its Web Workers) and on the 'reference' backend, in interleaved rounds;
 * samples/s per round from `performance.now()` in the page, medians reported. In the same rounds,
 * MobileNet (nn.mobilenet(), the `lowbit train --model mobilenet` net, Adam lr 2e-3, batch 64) trains
 * on 'wasm' on one and two threads (not on 'reference': seconds per step).
 *
 *   npx tsx bench/browser-train.ts [ROUNDS]      # default 5 rounds
 *
 * The same page runs the TensorFlow.js peer (bench/peers/tfjs-page.ts: the same LeNet-5, batch and
 * SGD step written with @tensorflow/tfjs-core) on each TF.js backend it can start — webgl, wasm
 * (threaded when cross-origin isolated), cpu — in the same rounds; a backend that cannot train the
 * net is recorded with TF.js's own error. Without the TF.js packages those rows are skipped.
 *
 * Writes bench/results/browser-train.json (atomically). Skips with a message when Chromium or
 * playwright-core is missing (test/chromium.ts).
 */
import { copyFileSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromiumUnavailable, CROSS_ORIGIN_ISOLATION, withChromiumPage } from '../test/chromium.ts';
import { gitCommit, median, writeAtomic } from './lib.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const roundsText = process.argv[2] ?? '5';
const rounds = Number(roundsText);
if (!Number.isInteger(rounds) || rounds < 1 || rounds > 100) throw new Error(`ROUNDS must be an integer in 1..100, got '${roundsText}'`);

/** The page: one trainer per backend and job; `__steps(backend, n, job)` runs n steps and returns the milliseconds. */
const PAGE_SOURCE = `
import * as lowbit from './src/browser.ts';
const { nn, optim, quant, manualSeed, randn, randint, crossEntropy } = lowbit;
const BATCH = 64;
const trainers = {};
/** A training step on 8 random batches cycled: forward, cross-entropy, backward, optimizer step; returns the loss. */
function trainer(model, optimizer) {
  model.train();
  const batches = Array.from({ length: 8 }, () => ({ x: randn([BATCH, 1, 28, 28]), y: randint(10, [BATCH]) }));
  let i = 0;
  return () => {
    const { x, y } = batches[i++ % batches.length];
    const loss = crossEntropy(model.forward(x), y);
    loss.backward();
    optimizer.step();
    optimizer.zeroGrad();
    return loss.item();
  };
}
for (const backend of ['wasm', 'reference']) for (const job of ['fp32', 'qat']) {
  lowbit.setBackend(backend);
  manualSeed(0);
  const model = nn.lenet5();
  let optimizer;
  if (job === 'qat') {
    quant.prepareQat(model, quant.qatFromCliOptions({ quant: 'w4a4' }));
    optimizer = new optim.Adam(quant.qatParamGroups(model, { lr: 2e-3, quantLrScale: 0.1 }), { lr: 2e-3, weightDecay: 0 });
  } else {
    optimizer = new optim.SGD(model.parameters(), { lr: 0.01, momentum: 0.9 });
  }
  trainers[backend + '/' + job] = trainer(model, optimizer);
}
// MobileNet (nn.mobilenet(), Adam lr 2e-3 as the CLI default) on wasm only: the reference backend
// takes seconds per step
{
  lowbit.setBackend('wasm');
  manualSeed(0);
  const model = nn.mobilenet();
  trainers['wasm/mobilenet'] = trainer(model, new optim.Adam(model.parameters(), { lr: 2e-3 }));
}
globalThis.__info = { defaultBackend: null, backends: lowbit.availableBackends(), userAgent: navigator.userAgent, crossOriginIsolated: globalThis.crossOriginIsolated === true };
globalThis.__threads = (n) => lowbit.setWasmThreads(n);
globalThis.__steps = (backend, n, job) => {
  lowbit.setBackend(backend);
  const t = performance.now();
  let loss = 0;
  for (let s = 0; s < n; s++) loss = trainers[backend + '/' + job]();
  return { ms: performance.now() - t, loss };
};
`;

async function main(): Promise<void> {
  const why = await chromiumUnavailable();
  if (why) {
    console.log(`browser-train: skipped (${why})`);
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-browser-train-'));
  try {
    const { build } = await import('esbuild');
    await build({
      stdin: { contents: PAGE_SOURCE, resolveDir: root, loader: 'ts', sourcefile: 'browser-train.ts' },
      bundle: true, platform: 'browser', format: 'esm', target: 'es2022', outfile: join(dir, 'bundle.js'), logLevel: 'silent',
    });
    // The default backend of the bundle, before the page switches: a separate tiny module.
    await build({
      stdin: { contents: "import * as lowbit from './src/browser.ts'; globalThis.__default = lowbit.getBackend();", resolveDir: root, loader: 'ts', sourcefile: 'default.ts' },
      bundle: true, platform: 'browser', format: 'esm', target: 'es2022', outfile: join(dir, 'default.js'), logLevel: 'silent',
    });
    // The TF.js peer: its own module in the page, the wasm backend's binaries next to it.
    let tfjsSkip = '';
    try {
      const wasmDist = join(dirname(createRequire(import.meta.url).resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist');
      for (const f of readdirSync(wasmDist).filter((n) => n.endsWith('.wasm'))) copyFileSync(join(wasmDist, f), join(dir, f));
      await build({
        entryPoints: [join(root, 'bench/peers/tfjs-page.ts')], bundle: true, platform: 'browser', format: 'esm', target: 'es2022',
        mainFields: ['browser', 'module', 'main'], outfile: join(dir, 'tfjs.js'), logLevel: 'silent',
      });
    } catch (e) {
      tfjsSkip = `TensorFlow.js not available: ${e instanceof Error ? e.message.split('\n')[0]! : String(e)}`;
      console.log(`browser-train: ${tfjsSkip}`);
    }
    writeFileSync(join(dir, 'index.html'), `<!doctype html><meta charset="utf-8"><title>lowbit</title><link rel="icon" href="data:,"><script type="module" src="default.js"></script><script type="module" src="bundle.js"></script>${tfjsSkip ? '' : '<script type="module" src="tfjs.js"></script>'}`);
    const JOBS = ['fp32', 'qat'] as const;
    const VARIANTS = [
      { name: 'wasm×1', backend: 'wasm', threads: 1 },
      { name: 'wasm×2', backend: 'wasm', threads: 2 },
      { name: 'reference', backend: 'reference', threads: 1 },
    ] as const;
    const steps: Record<string, number> = { wasm: 40, reference: 4 };
    const MOBILENET_STEPS = 5;
    const mobilenetSamples: Record<string, number[]> = { 'wasm×1': [], 'wasm×2': [] };
    const empty = () => Object.fromEntries(VARIANTS.map((v) => [v.name, [] as number[]]));
    const samples: Record<string, Record<string, number[]>> = { fp32: empty(), qat: empty() };
    type StepsFn = (b: string, n: number, job: string) => { ms: number; loss: number };
    type ThreadsFn = (n: number) => Promise<number>;
    type TfApi = { setup: (b: string, threads: number) => Promise<{ ok: boolean; threads?: number; reason?: string }>; steps: (b: string, n: number) => Promise<{ ms: number; loss: number }>; version: string };
    const TF_BACKENDS = ['webgl', 'wasm', 'cpu'] as const;
    const tfSteps: Record<string, number> = { webgl: 4, wasm: 8, cpu: 2 };
    const tfSamples: Record<string, number[]> = {};
    const tfStatus: Record<string, { threads?: number; skipped?: string }> = {};
    let tfVersion = '';
    const { value, problems } = await withChromiumPage(dir, 'index.html', async (page) => {
      await page.waitForFunction((tf) => '__steps' in globalThis && '__default' in globalThis && (!tf || '__tf' in globalThis), !tfjsSkip, { timeout: 120_000 });
      if (!tfjsSkip) {
        tfVersion = await page.evaluate(() => (globalThis as unknown as { __tf: TfApi }).__tf.version);
        for (const b of TF_BACKENDS) {
          const r = await page.evaluate((bb) => (globalThis as unknown as { __tf: TfApi }).__tf.setup(bb, 2), b);
          tfStatus[b] = r.ok ? (r.threads !== undefined ? { threads: r.threads } : {}) : { skipped: r.reason ?? 'failed' };
          if (r.ok) {
            tfSamples[b] = [];
            await page.evaluate((bb) => (globalThis as unknown as { __tf: TfApi }).__tf.steps(bb, 1), b); // warm-up
          }
          console.log(`TensorFlow.js ${b}: ${r.ok ? `ready${r.threads !== undefined ? ` (${r.threads} thread(s))` : ''}` : `skipped: ${r.reason ?? ''}`}`);
        }
      }
      const info = await page.evaluate(() => ({ ...(globalThis as unknown as { __info: object }).__info, defaultBackend: (globalThis as unknown as { __default: string }).__default }));
      // warm-up: compile, tier up
      for (const job of JOBS) {
        for (const backend of ['wasm', 'reference']) {
          await page.evaluate(([b, n, j]) => (globalThis as unknown as { __steps: StepsFn }).__steps(b as string, n as number, j as string), [backend, backend === 'wasm' ? 20 : 2, job] as const);
        }
      }
      await page.evaluate(() => (globalThis as unknown as { __steps: StepsFn }).__steps('wasm', 3, 'mobilenet'));
      const losses: Record<string, number> = {};
      for (let r = 0; r < rounds; r++) {
        for (const job of JOBS) {
          for (const v of VARIANTS) {
            const n = steps[v.backend]!;
            if (v.backend === 'wasm') {
              const active = await page.evaluate((t) => (globalThis as unknown as { __threads: ThreadsFn }).__threads(t), v.threads);
              if (active !== v.threads) throw new Error(`${v.name}: the page runs wasm on ${active} thread(s)`);
            }
            const { ms, loss } = await page.evaluate(([b, k, j]) => (globalThis as unknown as { __steps: StepsFn }).__steps(b as string, k as number, j as string), [v.backend, n, job] as const);
            samples[job]![v.name]!.push((n * 64) / (ms / 1000));
            losses[`${v.name}/${job}`] = loss;
          }
          if (job === 'fp32') {
            for (const b of Object.keys(tfSamples)) {
              const n = tfSteps[b]!;
              const { ms, loss } = await page.evaluate(([bb, k]) => (globalThis as unknown as { __tf: TfApi }).__tf.steps(bb as string, k as number), [b, n] as const);
              tfSamples[b]!.push((n * 64) / (ms / 1000));
              losses[`tfjs-${b}`] = loss;
            }
          }
          const tfText = job === 'fp32' ? Object.entries(tfSamples).map(([b, v]) => `, TF.js ${b} ${v.at(-1)!.toFixed(0)}`).join('') : '';
          console.log(`round ${r + 1}/${rounds} ${job}: ${VARIANTS.map((v) => `${v.name} ${samples[job]![v.name]!.at(-1)!.toFixed(0)}`).join(', ')}${tfText} samples/s`);
        }
        for (const v of VARIANTS.filter((vv) => vv.backend === 'wasm')) {
          const active = await page.evaluate((t) => (globalThis as unknown as { __threads: ThreadsFn }).__threads(t), v.threads);
          if (active !== v.threads) throw new Error(`${v.name}: the page runs wasm on ${active} thread(s)`);
          const { ms, loss } = await page.evaluate((k) => (globalThis as unknown as { __steps: StepsFn }).__steps('wasm', k, 'mobilenet'), MOBILENET_STEPS);
          mobilenetSamples[v.name]!.push((MOBILENET_STEPS * 64) / (ms / 1000));
          losses[`${v.name}/mobilenet`] = loss;
        }
        console.log(`round ${r + 1}/${rounds} mobilenet: ${Object.entries(mobilenetSamples).map(([name, v]) => `${name} ${v.at(-1)!.toFixed(0)}`).join(', ')} samples/s`);
      }
      return { info, losses };
    }, CROSS_ORIGIN_ISOLATION);
    if (problems.errors.length > 0) throw new Error(`page errors: ${problems.errors.join('; ')}`);
    const wasm = median(samples.fp32!['wasm×1']!);
    const wasm2 = median(samples.fp32!['wasm×2']!);
    const reference = median(samples.fp32!.reference!);
    const qatWasm = median(samples.qat!['wasm×1']!);
    const qatWasm2 = median(samples.qat!['wasm×2']!);
    const qatReference = median(samples.qat!.reference!);
    const result = {
      what: 'LeNet-5 training, batch 64, SGD momentum 0.9 (fp32) and W4A4 LSQ QAT with Adam (qat: the lowbit train default job), headless Chromium (src/browser.ts bundle)',
      commit: gitCommit(),
      date: new Date().toISOString(),
      loadAverage1m: loadavg()[0],
      rounds,
      stepsPerRound: steps,
      browser: value.info,
      samplesPerSecond: samples.fp32,
      median: { 'wasm×1': wasm, 'wasm×2': wasm2, reference, speedup: wasm / reference, twoThreads: wasm2 / wasm },
      qat: { samplesPerSecond: samples.qat, median: { 'wasm×1': qatWasm, 'wasm×2': qatWasm2, reference: qatReference, speedup: qatWasm / qatReference, twoThreads: qatWasm2 / qatWasm } },
      mobilenet: {
        what: 'MobileNet (nn.mobilenet(), lowbit train --model mobilenet) training, batch 64, Adam lr 2e-3, random MNIST-shaped batches, wasm backend only',
        stepsPerRound: MOBILENET_STEPS,
        samplesPerSecond: mobilenetSamples,
        median: { 'wasm×1': median(mobilenetSamples['wasm×1']!), 'wasm×2': median(mobilenetSamples['wasm×2']!), twoThreads: median(mobilenetSamples['wasm×2']!) / median(mobilenetSamples['wasm×1']!) },
      },
      lastLoss: value.losses,
      tfjs: tfjsSkip
        ? { skipped: tfjsSkip }
        : {
            version: tfVersion,
            what: 'the same LeNet-5 (channels-last), batch and SGD step in @tensorflow/tfjs-core (bench/peers/tfjs-page.ts), same rounds as the fp32 job',
            backends: tfStatus,
            samplesPerSecond: tfSamples,
            median: Object.fromEntries(Object.entries(tfSamples).map(([b, v]) => [b, median(v)])),
            lowbitWasm1OverTfjs: Object.fromEntries(Object.entries(tfSamples).map(([b, v]) => [b, wasm / median(v)])),
          },
    };
    writeAtomic(join(root, 'bench/results/browser-train.json'), `${JSON.stringify(result, null, 2)}\n`);
    console.log(`default backend in the browser: ${String((value.info as { defaultBackend: string }).defaultBackend)}`);
    console.log(`median fp32: wasm 1 thread ${wasm.toFixed(0)} samples/s, 2 threads ${wasm2.toFixed(0)} (${(wasm2 / wasm).toFixed(2)}x), reference ${reference.toFixed(0)} samples/s (wasm 1 thread ${(wasm / reference).toFixed(1)}x)`);
    for (const [b, st] of Object.entries(tfStatus)) {
      console.log(st.skipped ? `TensorFlow.js ${b}: skipped (${st.skipped})` : `median TensorFlow.js ${tfVersion} ${b}${st.threads !== undefined ? ` (${st.threads} thread(s))` : ''}: ${median(tfSamples[b]!).toFixed(0)} samples/s; lowbit wasm 1 thread ${(wasm / median(tfSamples[b]!)).toFixed(1)}x`);
    }
    console.log(`median W4A4 LSQ QAT: wasm 1 thread ${qatWasm.toFixed(0)} samples/s, 2 threads ${qatWasm2.toFixed(0)} (${(qatWasm2 / qatWasm).toFixed(2)}x), reference ${qatReference.toFixed(0)} samples/s (wasm 1 thread ${(qatWasm / qatReference).toFixed(1)}x); load average ${loadavg()[0]!.toFixed(1)}`);
    console.log(`median MobileNet: wasm 1 thread ${result.mobilenet.median['wasm×1'].toFixed(0)} samples/s, 2 threads ${result.mobilenet.median['wasm×2'].toFixed(0)} (${result.mobilenet.median.twoThreads.toFixed(2)}x)`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
