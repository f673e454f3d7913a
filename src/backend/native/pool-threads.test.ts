/**
 * The native thread pool is one per process, shared by every worker_thread that loads the addon
 * (the threaded data-parallel trainer runs one replica per worker thread). Resizing it from several
 * threads at once, while others run kernels, must neither deadlock nor crash: before resize took the
 * pool's run lock, this script hung in every run (two resizes joining the same pool thread).
 * It runs in a child process with a time limit, so a hang fails the test instead of stalling it.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { loadNative } from './index.ts';

const loaded = loadNative();
const addonPath = fileURLToPath(new URL('../../../build/Release/lowbit_native.node', import.meta.url));

const script = `
const { Worker } = require('node:worker_threads');
const addon = require(${JSON.stringify(addonPath)});
addon.setThreads(2);
const body = \`
  const { workerData, parentPort } = require('node:worker_threads');
  const addon = require(\${JSON.stringify(${JSON.stringify(addonPath)})});
  for (let i = 0; i < 2000; i++) addon.setThreads(1 + ((i + workerData) % 2));
  parentPort.postMessage(addon.getThreads ? addon.getThreads() : 0);
\`;
const workers = [0, 1, 2].map((id) => new Worker(body, { eval: true, workerData: id }));
Promise.all(workers.map((w) => new Promise((resolve, reject) => { w.on('message', resolve); w.on('error', reject); })))
  .then(() => { console.log('resized'); process.exit(0); }, (e) => { console.error(e); process.exit(1); });
`;

describe('native thread pool shared by worker threads', { skip: loaded.ok ? false : `native addon not loaded: ${loaded.reason}` }, () => {
  it('survives concurrent resizes from three worker threads (no deadlock, no crash)', () => {
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.signal, null, `killed by ${r.signal} (hung): ${r.stderr}`);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /resized/);
  });
});
