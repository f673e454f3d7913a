/**
 * The published package, as a user of `npm install lowbit` gets it: compiled JavaScript and
 * declarations in dist/ (tsconfig.build.json), the files package.json's "files" names and nothing
 * from src/. The test builds dist into a temporary package directory holding exactly those files,
 * links it as node_modules/lowbit of a temporary app and checks, without tsx or any loader, that:
 *   - plain Node.js imports 'lowbit', trains a small model (the loss falls), runs QAT and the
 *     integer runtime on the native backend, and trains data-parallel in worker threads started
 *     from dist;
 *   - a strict TypeScript consumer type-checks against the declarations, and wrong calls are
 *     type errors (the types are real, not `any`);
 *   - `lowbit` (bin/lowbit.js) runs the compiled CLI when src/ is absent;
 *   - esbuild bundles 'lowbit' for the browser from dist through the "browser" condition and
 *     field, without Node.js built-ins or the native addon.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const manifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { files: string[]; exports: Record<string, unknown> };
const work = mkdtempSync(join(tmpdir(), 'lowbit-package-'));
const pkg = join(work, 'lowbit');
const app = join(work, 'app');

/** Runs node (or a script) with a clean environment: no NODE_OPTIONS, so no tsx loader sneaks in. */
function run(args: string[], cwd: string, timeout = 180_000): Promise<{ stdout: string; stderr: string }> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env['NODE_OPTIONS'];
  return new Promise((resolve, reject) => {
    execFile(process.execPath, args, { cwd, env, timeout, maxBuffer: 16 << 20 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`node ${args.join(' ')} failed (${error.message}):\n${stderr}\n${stdout}`));
      else resolve({ stdout, stderr });
    });
  });
}

test.after(() => rmSync(work, { recursive: true, force: true }));

test('package: files, exports and dist', { timeout: 600_000 }, async (t) => {
  // The package directory: the "files" entries (dist built fresh, the rest copied) + package.json.
  mkdirSync(pkg, { recursive: true });
  for (const entry of manifest.files) {
    if (entry === 'dist') continue;
    assert.ok(existsSync(join(root, entry)), `package.json "files" names '${entry}', which does not exist`);
    cpSync(join(root, entry), join(pkg, entry), { recursive: true });
  }
  assert.ok(manifest.files.includes('dist'), '"files" must ship dist/');
  cpSync(join(root, 'package.json'), join(pkg, 'package.json'));
  await run([join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(root, 'tsconfig.build.json'), '--outDir', join(pkg, 'dist')], root, 300_000);
  assert.ok(existsSync(join(pkg, 'dist', 'index.js')) && existsSync(join(pkg, 'dist', 'index.d.ts')), 'dist/index.js and .d.ts built');
  assert.ok(!existsSync(join(pkg, 'src')), 'the package ships no TypeScript sources');
  assert.ok(!existsSync(join(pkg, 'dist', 'tensor', 'tensor.test.js')), 'tests are not compiled into dist');
  // What `npm install` provides beside the files: the dependencies and the addon the install
  // script builds (build/Release; linked from this checkout's build).
  symlinkSync(join(root, 'node_modules'), join(pkg, 'node_modules'), 'dir');
  if (existsSync(join(root, 'build'))) symlinkSync(join(root, 'build'), join(pkg, 'build'), 'dir');
  mkdirSync(join(app, 'node_modules'), { recursive: true });
  symlinkSync(pkg, join(app, 'node_modules', 'lowbit'), 'dir');
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', type: 'module', private: true }));

  await t.test('plain Node.js imports lowbit from dist and trains', async () => {
    writeFileSync(join(app, 'main.mjs'), `
import { make } from './model.mjs';
import { getBackend, manualSeed, nn, optim, quant, runtime, tensor, Tensor, crossEntropy, distributed } from 'lowbit';
manualSeed(0);
const x = new Tensor(Float32Array.from({ length: 64 * 8 }, (_, i) => Math.sin(i * 0.37)), [64, 8]);
const y = tensor(Array.from({ length: 64 }, (_, i) => (Math.sin(i * 0.37 * 8) > 0 ? 1 : 0)), [64], 'int32');
const model = new nn.Sequential(new nn.Linear(8, 16), new nn.ReLU(), new nn.Linear(16, 2));
const opt = new optim.Adam(model.parameters(), { lr: 0.05 });
const losses = [];
for (let step = 0; step < 60; step++) {
  opt.zeroGrad();
  const loss = crossEntropy(model.forward(x), y);
  loss.backward();
  opt.step();
  losses.push(loss.item());
}
quant.prepareQat(model, { default: { weight: quant.int8Lsq, activation: quant.int8Lsq }, keepFirstLast8bit: false });
model.forward(x);
const im = runtime.convert(model, { sample: x });
const logits = im.run(x.data, 64);
// Data-parallel training in worker threads: the workers load dist's threads-worker.js.
const replica = { module: new URL('./model.mjs', import.meta.url).href, export: 'make' };
const dp = await distributed.fitDataParallelThreads(make(), { workers: 2, lr: 0.1, momentum: 0.9, epochs: 1, trainLoader: [{ x, y }, { x, y }], replica, progress: false });
console.log(JSON.stringify({ first: losses[0], last: losses.at(-1), backend: getBackend(), logits: logits.length,
  url: import.meta.resolve('lowbit'), dpEpochs: dp.epochs.length }));
`);
    writeFileSync(join(app, 'model.mjs'), `import { nn } from 'lowbit';\nexport function make() { return new nn.Sequential(new nn.Linear(8, 4), new nn.ReLU(), new nn.Linear(4, 2)); }\n`);
    const { stdout } = await run(['main.mjs'], app);
    const result = JSON.parse(stdout.trim().split('\n').at(-1)!) as { first: number; last: number; backend: string; logits: number; url: string; dpEpochs: number };
    assert.ok(result.url.endsWith('/dist/index.js'), `'lowbit' resolves to dist: ${result.url}`);
    assert.ok(result.last < result.first * 0.5, `the loss falls: ${result.first} -> ${result.last}`);
    assert.equal(result.logits, 64 * 2);
    assert.equal(result.dpEpochs, 1, 'one data-parallel epoch in worker threads');
    if (existsSync(join(root, 'build', 'Release', 'lowbit_native.node')) && process.env['LOWBIT_BACKEND'] !== 'reference') {
      assert.equal(result.backend, 'native', 'the addon built by the install script loads from dist');
    }
  });

  await t.test('a strict TypeScript consumer type-checks against the declarations', async () => {
    writeFileSync(join(app, 'tsconfig.json'), JSON.stringify({
      compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true, types: ['node'], typeRoots: [join(root, 'node_modules', '@types')] },
      files: ['check.ts'],
    }));
    writeFileSync(join(app, 'check.ts'), `
import { nn, quant, runtime, tensor, Tensor } from 'lowbit';
const t: Tensor = tensor([1, 2, 3, 4], [2, 2]);
const shape: readonly number[] = t.shape;
const model = new nn.Linear(2, 3);
const out: Tensor = model.forward(t);
quant.prepareQat(model, { default: { weight: quant.int4Lsq, activation: quant.uint8Lsq } });
let im: runtime.IntModel | null = null;
// @ts-expect-error: a Tensor is not a number
const wrong: number = out;
// @ts-expect-error: Linear takes (inFeatures, outFeatures)
new nn.Linear('2', 3);
// @ts-expect-error: no such export
import('lowbit').then((m) => m.notAnExport);
export { shape, im, wrong };
`);
    await run([join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(app, 'tsconfig.json')], app);
  });

  await t.test('the lowbit command runs the compiled CLI', async () => {
    const { stdout } = await run([join(pkg, 'bin', 'lowbit.js'), 'info', '--backend'], app);
    assert.match(stdout, /^active\s+\S+/m);
    const help = await run([join(pkg, 'bin', 'lowbit.js'), 'train', '--help'], app);
    assert.match(help.stdout, /--quant/);
  });

  await t.test('esbuild bundles lowbit for the browser from dist', async () => {
    writeFileSync(join(app, 'browser.mjs'), `import { runtime, tensor } from 'lowbit';\nexport const ok = [typeof runtime.intModelFromLowbit, tensor([1], [1]).shape[0]];\n`);
    const result = await build({
      entryPoints: [join(app, 'browser.mjs')], bundle: true, platform: 'browser', format: 'esm', target: 'es2022',
      write: false, logLevel: 'silent', absWorkingDir: app,
    });
    const text = result.outputFiles[0]!.text;
    assert.ok(text.length > 10_000, 'the bundle holds the library');
    assert.ok(!text.includes('lowbit_native.node'), 'the native addon loader is swapped out');
    assert.ok(!/from\s*"node:/.test(text) && !/require\("node:/.test(text), 'no Node.js built-ins in the browser bundle');
  });
});
