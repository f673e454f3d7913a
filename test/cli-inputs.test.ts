// Input and output paths, conflicting options and exit codes of lowbit info, eval and export
// (user audit, session 8). The CLI runs as a child process, as users run it; the models are
// tiny and built through the API (a randomly initialised LeNet-5 at W4A4, no training).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { noGrad } from '../src/autograd/engine.ts';
import { readLowbit, writeLowbit, type LowbitNode } from '../src/format/lowbit.ts';
import { writeFileAtomic } from '../src/format/files.ts';
import { createModel, type Module, type TensorModule } from '../src/nn/index.ts';
import { prepareQat, qatPlanOfRunConfig } from '../src/quant/qat/index.ts';
import { convert } from '../src/runtime/index.ts';
import { saveIntModel } from '../src/runtime/io.ts';
import { manualSeed, randn } from '../src/tensor/index.ts';
import { saveCheckpoint } from '../src/train/checkpoint.ts';
import { systemErrorMessage } from '../src/cli/inputs.ts';
import { loadOnnxRuntime } from '../src/onnx/verify.ts';

const bin = fileURLToPath(new URL('../bin/lowbit.js', import.meta.url));

interface Run { code: number | null; stdout: string; stderr: string }

/** Runs the CLI in a child process. */
function lowbit(args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, ...args], { env: { ...process.env, LOWBIT_DEBUG: '' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Runs every case (two at a time: the machine has two cores) and checks its exit code and one-line message. */
async function expectAll(cases: readonly [args: string[], code: number, message: RegExp][]): Promise<void> {
  const results: Run[] = [];
  for (let i = 0; i < cases.length; i += 2) results.push(...(await Promise.all(cases.slice(i, i + 2).map(([args]) => lowbit(args)))));
  cases.forEach(([args, code, message], i) => {
    const r = results[i]!;
    const what = `lowbit ${args.join(' ')}`;
    assert.equal(r.code, code, `${what}: exit ${r.code}, stderr ${r.stderr}`);
    assert.equal(r.stderr.trimEnd().split('\n').length, 1, `${what}: one line: ${r.stderr}`);
    assert.match(r.stderr, message, what);
    assert.match(r.stderr, code === 2 ? /^lowbit: error: .* \(see 'lowbit \w+ --help'\)\n$/ : /^lowbit: error: /, what);
    // No raw Node error codes and no temporary file names.
    assert.doesNotMatch(r.stderr, /\bE[A-Z]{3,}\b|\.tmp-\d+-[0-9a-f]+/, what);
  });
}

let dir = '';
/** The W4A4 LeNet-5 as an IntModel file, its QAT run directory and a float32 run directory. */
let model = '';
let qatRun = '';
let floatRun = '';

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'lowbit-cli-inputs-'));
  manualSeed(5);
  const config = { model: 'lenet5', dataset: 'mnist', quant: 'w4a4', estimator: 'lsq' };
  const qat = createModel('lenet5', { numClasses: 10 }) as Module;
  prepareQat(qat, qatPlanOfRunConfig(config)!);
  qat.train();
  for (let i = 0; i < 3; i++) noGrad(() => (qat as TensorModule).forward(randn([16, 1, 28, 28])));
  qat.eval();
  qatRun = join(dir, 'lenet5-mnist-w4a4');
  mkdirSync(qatRun);
  saveCheckpoint(join(qatRun, 'checkpoint.safetensors'), { model: qat.stateDict(), epoch: 1, config });
  model = join(dir, 'w4a4.lowbit');
  saveIntModel(model, convert(qat, { inputShape: [1, 28, 28], metadata: { model: 'lenet5', dataset: 'mnist' } }));
  floatRun = join(dir, 'lenet5-mnist-fp32');
  mkdirSync(floatRun);
  const fp32 = createModel('lenet5', { numClasses: 10 }) as Module;
  saveCheckpoint(join(floatRun, 'checkpoint.safetensors'), { model: fp32.stateDict(), epoch: 1, config: { model: 'lenet5', dataset: 'mnist', quant: 'fp32' } });
});

after(() => rmSync(dir, { recursive: true, force: true }));

/** A copy of the model file with its graph edited by `edit` (the file stays a valid .lowbit container). */
function edited(name: string, edit: (graph: Record<string, unknown>[], tensors: Record<string, unknown>) => void): string {
  const file = readLowbit(model);
  const graph = file.graph.map((n) => JSON.parse(JSON.stringify(n)) as Record<string, unknown>);
  const tensors: Record<string, unknown> = { ...file.tensors };
  edit(graph, tensors);
  const path = join(dir, name);
  writeLowbit(path, { graph: graph as LowbitNode[], tensors: tensors as never, metadata: file.metadata });
  return path;
}

describe('lowbit info FILE', () => {
  it('rejects an integer model whose graph eval and export reject: weightBits 9, a missing tensor, a wrong dtype (exit 1)', async () => {
    const layer = (graph: Record<string, unknown>[], name: string) => graph.find((n) => n.name === name)!;
    const bits9 = edited('bits9.lowbit', (g) => void (layer(g, 'fc1').weightBits = 9));
    const missing = edited('missing.lowbit', (g) => void (layer(g, 'fc2').weight = 'no.such.tensor'));
    const dtype = edited('dtype.lowbit', (_g, t) => void (t['fc3.outScale'] = { dtype: 'int32', shape: [10], data: new Int32Array(10) }));
    await expectAll([
      [['info', bits9], 1, /bits9\.lowbit is not a valid lowbit integer model: IntModel: linear 'fc1': weightBits 9 must be an integer in \[1, 8\]/],
      [['info', missing], 1, /missing\.lowbit is not a valid lowbit integer model: .*missing tensor 'no\.such\.tensor'/],
      [['info', dtype], 1, /dtype\.lowbit is not a valid lowbit integer model: .*'fc3\.outScale' .*int32/],
      [['eval', bits9], 1, /bits9\.lowbit is not a valid lowbit integer model: .*weightBits 9/],
    ]);
  });

  it('shows the bits of every layer of an integer model (as eval prints them: first and last layer 8-bit) and of the input quantizer', async () => {
    const [text, json] = await Promise.all([lowbit(['info', model]), lowbit(['info', model, '--json'])]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^graph +integer model \(IntModel\), valid$/m);
    assert.match(text.stdout, /^ +0 +quantize +input +a8$/m);
    assert.match(text.stdout, /^ +1 +conv2d +conv1 +w8a8$/m);
    assert.match(text.stdout, /^ +3 +conv2d +conv2 +w4a4$/m);
    assert.match(text.stdout, /^ +2 +maxpool2d +pool1$/m);
    const nodes = (JSON.parse(json.stdout) as { nodes: { name: string; bits?: string }[] }).nodes;
    assert.deepEqual(nodes.filter((n) => n.bits !== undefined).map((n) => `${n.name}:${n.bits}`), ['input:a8', 'conv1:w8a8', 'conv2:w4a4', 'fc1:w4a4', 'fc2:w4a4', 'fc3:w8a8']);
  });

  it('--backend with a file is a usage error (exit 2), not silently ignored', async () => {
    await expectAll([[['info', model, '--backend'], 2, /--backend prints the compute backends, not a model file/]]);
  });
});

describe('model and output paths', () => {
  it('missing inputs and unusable --out / --save paths: one line naming the argument, exit 1, no Node error code or temp name', async () => {
    const folder = join(dir, 'adir.lowbit');
    mkdirSync(folder, { recursive: true });
    const absent = join(dir, 'no-such-dir', 'a.onnx');
    await expectAll([
      [['eval', join(dir, 'nonexist.lowbit')], 1, /eval: --model: '.*nonexist\.lowbit' does not exist/],
      [['info', join(dir, 'nonexist.lowbit')], 1, /info: '.*nonexist\.lowbit' does not exist/],
      [['export', join(dir, 'nonexist.lowbit')], 1, /export: '.*nonexist\.lowbit' does not exist/],
      [['export', model, '--out', absent], 1, /export: --out: cannot write '.*no-such-dir\/a\.onnx': directory '.*no-such-dir' does not exist/],
      [['export', model, '--out', folder], 1, /export: --out: '.*adir\.lowbit' is a directory; give a file name/],
      [['export', model, '--out', model], 1, /export: --out: '.*w4a4\.lowbit' is the input model/],
      [['eval', '--checkpoint', qatRun, '--save', folder], 1, /eval: --save: '.*adir\.lowbit' is a directory/],
      [['eval', '--checkpoint', qatRun, '--save', join(dir, 'no-such-dir', 'm.lowbit')], 1, /eval: --save: cannot write .*directory '.*no-such-dir' does not exist/],
    ]);
    assert.ok(!existsSync(join(dir, 'no-such-dir')));
    assert.deepEqual(readdirSync(folder), [], 'nothing written into the folder');
  });

  it('a Node file-system error that reaches main() is worded with the real path (no temp name)', () => {
    const message = (f: () => void): string | undefined => {
      try {
        f();
      } catch (e) {
        return systemErrorMessage(e);
      }
      assert.fail('expected an error');
    };
    const target = join(dir, 'no-such-dir', 'x.onnx');
    assert.equal(message(() => writeFileAtomic(target, new Uint8Array(1))), `cannot write '${target}': no such file or directory`);
    const folder = join(dir, 'is-a-dir');
    mkdirSync(folder);
    assert.equal(message(() => writeFileAtomic(folder, new Uint8Array(1))), `cannot write '${folder}': it is a directory`);
    assert.equal(systemErrorMessage(new Error('plain')), undefined);
  });

  it('wrong-kind inputs are named as such (exit 2); eval --checkpoint takes a run directory like export does', async () => {
    const onnx = join(dir, 'lenet5.onnx');
    writeFileSync(onnx, new Uint8Array([8, 7, 18, 4, 0x70, 0x79, 0x74, 0x6f]));
    const metrics = join(floatRun, 'metrics.json');
    writeFileSync(metrics, '{"config": {"model": "lenet5"}}\n');
    const checkpoint = join(qatRun, 'checkpoint.safetensors');
    await expectAll([
      [['export', onnx], 2, /export: '.*lenet5\.onnx' is an ONNX file; expects a \.lowbit integer model, a \.safetensors checkpoint or a run directory/],
      [['export', metrics], 2, /export: '.*metrics\.json' is a JSON file; expects a \.lowbit/],
      // eval and info read float32 ONNX models (test/cli-onnx.test.ts): these 8 bytes are not one.
      [['eval', onnx], 1, /lenet5\.onnx: cannot import the ONNX model: .*\[bad-model\]/],
      [['info', onnx], 1, /lenet5\.onnx: cannot import the ONNX model: .*\[bad-model\]/],
      [['eval', checkpoint], 2, /--model: '.*checkpoint\.safetensors' is a training checkpoint: pass it as --checkpoint /],
      [['eval', qatRun], 2, /--model: '.*lenet5-mnist-w4a4' is a training checkpoint folder: pass it as --checkpoint /],
      [['eval', '--checkpoint', model], 2, /--checkpoint: '.*w4a4\.lowbit' is a \.lowbit integer model: pass it as --model /],
    ]);
    const r = await lowbit(['eval', '--checkpoint', qatRun, '--limit', '16']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^accuracy +\d+\.\d\d % \(\d+\/16\)$/m);
  });
});

describe('usage errors exit 2', () => {
  it('missing model, conflicting or out-of-range flags, and a bare argument contradicting its flag', async () => {
    const other = join(dir, 'other.lowbit');
    writeFileSync(other, '');
    await expectAll([
      [['eval'], 2, /give exactly one of --model FILE\.lowbit .* and --checkpoint/],
      [['eval', model, '--checkpoint', qatRun], 2, /give exactly one of --model/],
      [['eval', model, '--save', join(dir, 's.lowbit')], 2, /--save and --compare need --checkpoint/],
      [['eval', model, '--model', other], 2, /'.*w4a4\.lowbit' and --model .*other\.lowbit are two values of --model; give one/],
      [['export'], 2, /give the model to export/],
      [['export', model, '--opset', '22'], 2, /option '--opset' must be <= 21, got 22/],
      [['export', model, '--profile', 'web', '--weight-bits', '4'], 2, /--profile web writes no int4 tensors/],
      [['export', model, '--weight-bits', '4', '--opset', '13'], 2, /--weight-bits 4 needs --opset 21/],
    ]);
    // The same file twice is not a conflict.
    const same = await lowbit(['info', model, '--file', model]);
    assert.equal(same.code, 0, same.stderr);
  });
});

describe('lowbit export messages', () => {
  it('no float32 note without --weight-bits / --bias; the note and the int4 error name the CLI flags', async () => {
    const first = join(dir, 'fp32-a.onnx');
    const [plain, flagged] = await Promise.all([
      lowbit(['export', floatRun, '--out', first]),
      lowbit(['export', floatRun, '--out', join(dir, 'fp32-b.onnx'), '--bias', 'intmodel']),
    ]);
    assert.equal(plain.code, 0, plain.stderr);
    assert.match(plain.stdout, /float32, opset 13/);
    assert.doesNotMatch(plain.stdout, /note:/);
    assert.equal(flagged.code, 0, flagged.stderr);
    assert.match(flagged.stdout, /^ {2}note: --bias has no effect on a float32 export$/m);
    // conv1 of the W4A4 model keeps 8-bit weights (the first layer), which do not fit int4.
    await expectAll([[['export', model, '--weight-bits', '4', '--out', join(dir, 'int4.onnx')], 1, /export: layer 'conv1' has weights in \[-\d+, \d+\], which do not fit int4; pass --weight-bits 8, or leave --weight-bits out/]]);
    assert.ok(!existsSync(join(dir, 'int4.onnx')));
  });

  it('--verify: a note on --bias intmodel when the standard bias disagrees with the IntModel, none when it agrees', async (t) => {
    if (!(await loadOnnxRuntime()).ok) return t.skip('onnxruntime-node not installed');
    const verify = (bias: string[], out: string) => lowbit(['export', model, '--out', join(dir, out), '--verify', '--samples', '128', ...bias]);
    const [standard, exact, byDefault] = await Promise.all([verify(['--bias', 'standard'], 'standard.onnx'), verify(['--bias', 'intmodel'], 'exact.onnx'), verify([], 'default.onnx')]);
    assert.equal(standard.code, 0, standard.stderr);
    // The untrained model has near-tied logits: the one-step differences of the standard bias flip argmaxes.
    const agreement = Number(/argmax agreement ([\d.]+) %/.exec(standard.stdout)?.[1]);
    assert.ok(agreement < 100, standard.stdout);
    assert.match(standard.stdout, /^ {2}note: the standard int32 bias .* rounded to one\n +accumulator step/m);
    assert.match(standard.stdout, /--bias intmodel reproduces the IntModel exactly/);
    // The default puts the exact bias on the int4 layers: a note, if any, is about the int8 layers.
    assert.equal(byDefault.code, 0, byDefault.stderr);
    if (!/argmax agreement 100\.00 %/.test(byDefault.stdout)) assert.match(byDefault.stdout, /note: the standard int32 bias .* of the int8-weight layers/);
    assert.equal(exact.code, 0, exact.stderr);
    assert.match(exact.stdout, /argmax agreement 100\.00 %/);
    assert.doesNotMatch(exact.stdout, /note:/);
  });
});
