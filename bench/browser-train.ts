/**
 * LeNet-5 training throughput in headless Chromium: the browser bundle (src/browser.ts, built by
 * esbuild) trains LeNet-5 at batch 64 (SGD with momentum, random MNIST-shaped batches; fp32 speed
 * does not depend on pixel values) on the 'wasm' backend and on the 'reference' backend, in
 * interleaved rounds; samples/s per round from `performance.now()` in the page, medians reported.
 *
 *   npx tsx bench/browser-train.ts [ROUNDS]      # default 5 rounds
 *
 * Writes bench/results/browser-train.json (atomically). Skips with a message when Chromium or
 * playwright-core is missing (test/chromium.ts).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromiumUnavailable, withChromiumPage } from '../test/chromium.ts';
import { gitCommit, median, writeAtomic } from './lib.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const roundsText = process.argv[2] ?? '5';
const rounds = Number(roundsText);
if (!Number.isInteger(rounds) || rounds < 1 || rounds > 100) throw new Error(`ROUNDS must be an integer in 1..100, got '${roundsText}'`);

/** The page: one trainer per backend; `__steps(backend, n)` runs n steps and returns the milliseconds. */
const PAGE_SOURCE = `
import * as lowbit from './src/browser.ts';
const { nn, optim, manualSeed, randn, randint, crossEntropy } = lowbit;
const BATCH = 64;
const trainers = {};
for (const backend of ['wasm', 'reference']) {
  lowbit.setBackend(backend);
  manualSeed(0);
  const model = nn.lenet5();
  model.train();
  const batches = Array.from({ length: 8 }, () => ({ x: randn([BATCH, 1, 28, 28]), y: randint(10, [BATCH]) }));
  const optimizer = new optim.SGD(model.parameters(), { lr: 0.01, momentum: 0.9 });
  let i = 0;
  trainers[backend] = () => {
    const { x, y } = batches[i++ % batches.length];
    const loss = crossEntropy(model.forward(x), y);
    loss.backward();
    optimizer.step();
    optimizer.zeroGrad();
    return loss.item();
  };
}
globalThis.__info = { defaultBackend: null, backends: lowbit.availableBackends(), userAgent: navigator.userAgent };
globalThis.__steps = (backend, n) => {
  lowbit.setBackend(backend);
  const t = performance.now();
  let loss = 0;
  for (let s = 0; s < n; s++) loss = trainers[backend]();
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
    writeFileSync(join(dir, 'index.html'), '<!doctype html><meta charset="utf-8"><title>lowbit</title><link rel="icon" href="data:,"><script type="module" src="default.js"></script><script type="module" src="bundle.js"></script>');
    const steps: Record<string, number> = { wasm: 40, reference: 4 };
    const samples: Record<string, number[]> = { wasm: [], reference: [] };
    const { value, problems } = await withChromiumPage(dir, 'index.html', async (page) => {
      await page.waitForFunction(() => '__steps' in globalThis && '__default' in globalThis, undefined, { timeout: 120_000 });
      const info = await page.evaluate(() => ({ ...(globalThis as unknown as { __info: object }).__info, defaultBackend: (globalThis as unknown as { __default: string }).__default }));
      // warm-up: compile, tier up
      for (const backend of ['wasm', 'reference']) await page.evaluate(([b, n]) => (globalThis as unknown as { __steps: (b: string, n: number) => unknown }).__steps(b as string, n as number), [backend, backend === 'wasm' ? 20 : 2] as const);
      const losses: Record<string, number> = {};
      for (let r = 0; r < rounds; r++) {
        for (const backend of ['wasm', 'reference']) {
          const n = steps[backend]!;
          const { ms, loss } = await page.evaluate(([b, k]) => (globalThis as unknown as { __steps: (b: string, n: number) => { ms: number; loss: number } }).__steps(b as string, k as number), [backend, n] as const);
          samples[backend]!.push((n * 64) / (ms / 1000));
          losses[backend] = loss;
        }
        console.log(`round ${r + 1}/${rounds}: wasm ${samples.wasm!.at(-1)!.toFixed(0)} samples/s, reference ${samples.reference!.at(-1)!.toFixed(0)} samples/s`);
      }
      return { info, losses };
    });
    if (problems.errors.length > 0) throw new Error(`page errors: ${problems.errors.join('; ')}`);
    const wasm = median(samples.wasm!);
    const reference = median(samples.reference!);
    const result = {
      what: 'LeNet-5 training, batch 64, SGD momentum 0.9, headless Chromium (src/browser.ts bundle)',
      commit: gitCommit(),
      date: new Date().toISOString(),
      loadAverage1m: loadavg()[0],
      rounds,
      stepsPerRound: steps,
      browser: value.info,
      samplesPerSecond: { wasm: samples.wasm, reference: samples.reference },
      median: { wasm, reference, speedup: wasm / reference },
      lastLoss: value.losses,
    };
    writeAtomic(join(root, 'bench/results/browser-train.json'), `${JSON.stringify(result, null, 2)}\n`);
    console.log(`default backend in the browser: ${String((value.info as { defaultBackend: string }).defaultBackend)}`);
    console.log(`median: wasm ${wasm.toFixed(0)} samples/s, reference ${reference.toFixed(0)} samples/s (${(wasm / reference).toFixed(1)}x); load average ${loadavg()[0]!.toFixed(1)}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
