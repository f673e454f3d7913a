/**
 * IntModel speed inside headless Chromium (Debian's /usr/bin/chromium driven by playwright-core, as
 * test/chromium.ts): the browser bundle of bench/runtime-ts/page.ts measures the old and new
 * TypeScript executors (new: double and WebAssembly kernels) and the float fake-quant forward (reference backend) for LeNet-5 W8A8 and
 * ResNet-8 W8A8 / W4A4 at batch 64, best of `rounds` interleaved rounds.
 *
 *   nice -n 10 node --import tsx bench/runtime-ts/browser.ts [--batch 64] [--rounds 3] [--seed 0]
 *       [--models lenet5-w8a8,resnet8-w8a8,resnet8-w4a4] [--out bench/results/runtime-ts-browser.json]
 */
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromiumUnavailable, withChromiumPage } from '../../test/chromium.ts';
import { flagOr, numberFlag } from '../flags.ts';
import type { PageRow } from './page.ts';

const batch = numberFlag('batch', 64, { integer: true, min: 1 });
const rounds = numberFlag('rounds', 3, { integer: true, min: 1 });
const seed = numberFlag('seed', 0, { integer: true });
const models = flagOr('models', 'lenet5-w8a8,resnet8-w8a8,resnet8-w4a4').split(',');
const outFile = flagOr('out', 'bench/results/runtime-ts-browser.json');
const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const log = (s: string): void => console.log(`[runtime-ts browser] ${s}`);

const why = await chromiumUnavailable();
if (why) throw new Error(why);
const dir = mkdtempSync(join(tmpdir(), 'lowbit-runtime-ts-'));
try {
  const { build } = await import('esbuild');
  await build({
    stdin: {
      contents: [
        "import { runPage } from './bench/runtime-ts/page.ts';",
        // after the load event (page.goto waits for it; the run takes minutes)
        `setTimeout(() => { try { globalThis.__result = runPage(${JSON.stringify(models)}, ${batch}, ${rounds}, ${seed}); } catch (e) { globalThis.__error = String(e && e.stack || e); } }, 0);`,
      ].join('\n'),
      resolveDir: root, loader: 'ts', sourcefile: 'entry.ts',
    },
    bundle: true, platform: 'browser', format: 'esm', target: 'es2022', outfile: join(dir, 'bundle.js'), logLevel: 'silent',
  });
  const bundle = readFileSync(join(dir, 'bundle.js'), 'utf8');
  if (/from\s*["']node:|require\(["']node:/.test(bundle)) throw new Error('the browser bundle imports a Node.js module');
  writeFileSync(join(dir, 'index.html'), '<!doctype html><meta charset="utf-8"><title>lowbit bench</title><link rel="icon" href="data:,"><script type="module" src="bundle.js"></script>');
  log(`bundle ${(bundle.length / 1024).toFixed(0)} KiB; running ${models.join(', ')} in Chromium (batch ${batch}, ${rounds} rounds)`);
  const { value, problems } = await withChromiumPage(dir, 'index.html', async (page) => {
    await page.waitForFunction(() => '__result' in globalThis || '__error' in globalThis, undefined, { timeout: 1_200_000, polling: 1000 });
    return page.evaluate(() => ({
      result: (globalThis as { __result?: PageRow[] }).__result,
      error: (globalThis as { __error?: string }).__error,
      userAgent: (globalThis as { navigator?: { userAgent: string } }).navigator?.userAgent ?? '',
    }));
  });
  if (value.error) throw new Error(value.error);
  if (problems.errors.length > 0) throw new Error(problems.errors.join('\n'));
  const rows = value.result!;
  for (const r of rows) {
    const v = r.imagesPerSecond;
    log(`${r.model}: ${Object.entries(v).map(([k, s]) => `${k} ${s.toFixed(0)}`).join(', ')} images/s; new/old x${(v['ts-new']! / v['ts-old']!).toFixed(2)}, new/float x${(v['ts-new']! / v['float-fakequant-reference']!).toFixed(2)}, wasm/new x${(v['ts-wasm']! / v['ts-new']!).toFixed(2)}; identical logits ${r.identical}`);
  }
  mkdirSync(join(root, 'bench/results'), { recursive: true });
  const out = join(root, outFile);
  writeFileSync(`${out}.tmp`, JSON.stringify({ bench: 'runtime-ts-browser', userAgent: value.userAgent, seed, batch, rounds, rows }, null, 2));
  renameSync(`${out}.tmp`, out);
  log(`wrote ${out}`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
