/**
 * The browser entry exposes the pure-TypeScript namespaces added since it was written (mixed
 * precision, data-parallel training, ALPT embeddings), and its bundle still imports no Node.js
 * module. The full Chromium run is test/browser.test.ts.
 */
import assert from 'node:assert/strict';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import * as lowbit from './browser.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

describe('browser entry', () => {
  it('exports lowp, distributed and quant.embedding', () => {
    assert.equal(typeof lowbit.lowp.GradScaler, 'function');
    assert.equal(typeof lowbit.lowp.autocast, 'function');
    assert.equal(typeof lowbit.distributed.DataParallel, 'function');
    assert.equal(typeof lowbit.distributed.fitDataParallel, 'function');
    assert.equal(typeof lowbit.quant.embedding.QuantEmbedding, 'function');
    assert.equal(typeof lowbit.quant.embedding.AlptOptimizer, 'function');
    assert.equal(typeof lowbit.optim.LnsMadam, 'function');
  });

  it('exports quant.smartdeal and quant.irnn (pure TypeScript, as on the Node entry)', () => {
    assert.equal(typeof lowbit.quant.smartdeal?.prepareSmartDeal, 'function');
    assert.equal(typeof lowbit.quant.smartdeal?.shiftAddForward, 'function');
    assert.equal(typeof lowbit.quant.irnn?.QuantLSTM, 'function');
    assert.equal(typeof lowbit.quant.irnn?.loadIntLSTM, 'function');
    assert.equal(typeof lowbit.quant.vertical?.trainOnce, 'function');
    assert.equal(typeof lowbit.quant.vertical?.cascadeCode, 'function');
  });

  it('bundles for the browser without a Node.js import', async () => {
    const { build } = await import('esbuild');
    const result = await build({
      entryPoints: [join(root, 'src/browser.ts')],
      bundle: true, platform: 'browser', format: 'esm', target: 'es2022', write: false, logLevel: 'silent',
    });
    const text = result.outputFiles[0]!.text;
    assert.doesNotMatch(text, /from\s*["']node:|require\(["']node:/);
    assert.match(text, /GradScaler/);
  });
});
