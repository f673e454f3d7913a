/**
 * The browser path: src/browser.ts bundled by esbuild for the browser (the package.json "browser"
 * field swaps out the native addon loader and the file helpers) runs in headless Chromium a
 * workload that trains, fine-tunes at 4 bits, converts to the integer runtime and round-trips a
 * .lowbit file as bytes -- and must give the same numbers, bit for bit, as Node.js on the
 * reference backend.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import * as lowbit from '../src/browser.ts';
import { runWorkload, type WorkloadResult } from './fixtures/browser-workload.ts';
import { bundleBrowserEntry, chromiumUnavailable, withChromiumPage } from './chromium.ts';


describe('browser bundle', () => {
  it('runs training, QAT, the integer runtime and .lowbit bytes in Chromium, bit-identical to Node.js', async (t) => {
    const why = await chromiumUnavailable();
    if (why) return t.skip(why);
    const dir = mkdtempSync(join(tmpdir(), 'lowbit-browser-'));
    try {
      await bundleBrowserEntry([
        "import * as lowbit from './src/browser.ts';",
        "import { runWorkload } from './test/fixtures/browser-workload.ts';",
        'globalThis.__default = lowbit.getBackend();',
        'try { globalThis.__result = runWorkload(lowbit); } catch (e) { globalThis.__error = String(e && e.stack || e); }',
      ], join(dir, 'bundle.js'));
      const bundle = readFileSync(join(dir, 'bundle.js'), 'utf8');
      assert.doesNotMatch(bundle, /from\s*["']node:|require\(["']node:/, 'the browser bundle imports a Node.js module');
      writeFileSync(join(dir, 'index.html'), '<!doctype html><meta charset="utf-8"><title>lowbit</title><link rel="icon" href="data:,"><script type="module" src="bundle.js"></script>');

      const { value, problems } = await withChromiumPage(dir, 'index.html', async (page) => {
        await page.waitForFunction(() => '__result' in globalThis || '__error' in globalThis, undefined, { timeout: 120_000 });
        return page.evaluate(() => ({
          result: (globalThis as { __result?: WorkloadResult }).__result,
          error: (globalThis as { __error?: string }).__error,
          defaultBackend: (globalThis as { __default?: string }).__default,
        }));
      });
      assert.equal(value.error, undefined, value.error);
      assert.deepEqual(problems.errors, []);
      const browser = value.result!;
      // No native addon in the browser; Chromium has WebAssembly SIMD128, so the wasm backend is there
      // (the workload selects 'reference' itself, so its numbers are Node's reference ones).
      assert.deepEqual(browser.backends, ['reference', 'wasm'], 'reference and wasm, no native backend in the browser');
      assert.equal(value.defaultBackend, 'wasm', 'the browser default is the wasm backend');
      assert.ok(browser.floatAccuracy > 0.9, `float accuracy ${browser.floatAccuracy}`);
      assert.ok(browser.qatLosses.at(-1)! < browser.floatLosses[0]!, 'QAT ends below the first float loss');
      assert.ok(browser.roundTripEqual, '.lowbit bytes round trip');

      const node = runWorkload(lowbit);
      assert.deepEqual(browser.floatLosses, node.floatLosses);
      assert.deepEqual(browser.qatLosses, node.qatLosses);
      assert.deepEqual(browser.intLogits, node.intLogits);
      assert.equal(browser.lowbitBytes, node.lowbitBytes);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
