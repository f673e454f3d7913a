/**
 * The wasm backend's threads in a browser: the browser bundle (src/browser.ts through esbuild, the
 * package.json "browser" field swapping src/backend/wasm/host.ts for host.browser.ts: Web Workers
 * from a Blob URL) in headless Chromium. Served with COOP/COEP the page is cross-origin isolated,
 * the workers start and a LeNet-5 training run on two threads equals the one-thread run bit for
 * bit, with parts of it run on a worker; served without those headers the backend stays on one
 * thread, says why, and still trains.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ThreadsWorkloadResult } from './fixtures/wasm-threads-workload.ts';
import { bundleBrowserEntry, chromiumUnavailable, CROSS_ORIGIN_ISOLATION, withChromiumPage } from './chromium.ts';


describe('wasm threads in Chromium', () => {
  let dir = '';
  let why: string | null = null;
  before(async () => {
    why = await chromiumUnavailable();
    if (why) return;
    dir = mkdtempSync(join(tmpdir(), 'lowbit-browser-threads-'));
    await bundleBrowserEntry([
      "import * as lowbit from './src/browser.ts';",
      "import { runThreadsWorkload } from './test/fixtures/wasm-threads-workload.ts';",
      'runThreadsWorkload(lowbit).then((r) => { globalThis.__result = r; }, (e) => { globalThis.__error = String(e && e.stack || e); });',
    ], join(dir, 'bundle.js'));
    writeFileSync(join(dir, 'index.html'), '<!doctype html><meta charset="utf-8"><title>lowbit threads</title><link rel="icon" href="data:,"><script type="module" src="bundle.js"></script>');
  });
  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function load(headers: Record<string, string>): Promise<ThreadsWorkloadResult> {
    const { value, problems } = await withChromiumPage(dir, 'index.html', async (page) => {
      await page.waitForFunction(() => '__result' in globalThis || '__error' in globalThis, undefined, { timeout: 120_000 });
      return page.evaluate(() => ({
        result: (globalThis as { __result?: ThreadsWorkloadResult }).__result,
        error: (globalThis as { __error?: string }).__error,
      }));
    }, headers);
    assert.equal(value.error, undefined, value.error);
    assert.deepEqual(problems.errors, []);
    return value.result!;
  }

  it('cross-origin isolated (COOP + COEP): two threads, parts on the worker, the same losses and weights as one thread', async (t) => {
    if (why) return t.skip(why);
    const r = await load(CROSS_ORIGIN_ISOLATION);
    assert.equal(r.crossOriginIsolated, true);
    assert.equal(r.reason, null);
    assert.equal(r.active, 2);
    assert.ok(r.dispatched >= 3, `the worker ran parts of the steps (${r.dispatched} dispatches)`);
    assert.ok(r.losses.one[2]! < r.losses.one[0]!, `the loss falls: ${r.losses.one.join(', ')}`);
    assert.deepEqual(r.losses.two, r.losses.one);
    assert.deepEqual(r.weights.two, r.weights.one);
  });

  it('not isolated: one thread, the reason names cross-origin isolation, training still runs', async (t) => {
    if (why) return t.skip(why);
    const r = await load({});
    assert.equal(r.crossOriginIsolated, false);
    assert.equal(r.active, 1);
    assert.equal(r.dispatched, 0);
    assert.match(r.reason ?? '', /cross-origin isolated/);
    assert.deepEqual(r.losses.two, r.losses.one);
    assert.ok(r.losses.one[2]! < r.losses.one[0]!);
  });
});
