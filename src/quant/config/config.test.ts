import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import '../../tensor/index.ts';
import { lenet5, mlp, cnn, Sequential, Conv2d, BatchNorm2d, ReLU, Flatten, Linear } from '../../nn/index.ts';
import {
  ESTIMATORS, SCHEMES, estimatorsFor, int4Lsq, int8PerChannelSym, int8PerTensorAffine, planFromTable, qconfig, qconfigFor,
  resolvePlan, ternaryTwn, uint4Lsq, uint1Lsq, uint8Ema, w4a4, w1a1, binarySignPerChannel, type QuantPlan, type ResolvedLayer,
} from './index.ts';
import { qatFromCliOptions, QUANT_CHOICES, quantCliOptions } from '../qat/cli.ts';

describe('quant/config: qconfig validation', () => {
  it('accepts presets and combinations by spread', () => {
    const c = qconfig({ weight: { ...int4Lsq, bits: 3 }, activation: uint4Lsq });
    assert.equal(c.weight!.bits, 3);
    assert.equal(c.activation!.kind, 'lsq');
    assert.deepEqual(qconfig({ weight: null, activation: null }), { weight: null, activation: null });
  });

  it('rejects bit widths out of range, per kind', () => {
    assert.throws(() => qconfig({ weight: { ...int8PerChannelSym, bits: 0 }, activation: null }), /bits must be in \[1, 16\]/);
    assert.throws(() => qconfig({ weight: { ...int8PerChannelSym, bits: 17 }, activation: null }), /bits must be in \[1, 16\]/);
    assert.throws(() => qconfig({ weight: { ...int8PerChannelSym, bits: 4.5 }, activation: null }), /must be an integer/);
    assert.throws(() => qconfig({ weight: { ...binarySignPerChannel, bits: 2 }, activation: null }), /binary: bits must be 1/);
    assert.throws(() => qconfig({ weight: { ...ternaryTwn, bits: 4 }, activation: null }), /ternary.*bits must be 2/);
    assert.throws(() => qconfig({ weight: { ...int8PerChannelSym, bits: 1 }, activation: null }), /signed 1-bit uniform grid/);
    assert.throws(() => qconfig({ weight: null, activation: { kind: 'dorefa', bits: 12, signed: false } }), /kind 'dorefa' does not quantize activations at 12 bits/);
  });

  it('rejects unknown kinds naming the registered ones', () => {
    assert.throws(() => qconfig({ weight: { kind: 'lsqq', bits: 4 }, activation: null }), /unknown kind 'lsqq' \(registered: .*lsq/);
  });

  it('rejects conflicting options and unknown keys', () => {
    assert.throws(() => qconfig({ weight: { ...int8PerChannelSym, groupSize: 8 }, activation: null }), /'groupSize' conflicts with granularity 'channel'/);
    assert.throws(() => qconfig({ weight: { ...int8PerChannelSym, granularity: 'group' }, activation: null }), /needs a positive integer 'groupSize'/);
    assert.throws(() => qconfig({ weight: null, activation: { ...uint8Ema, granularity: 'channel' } }), /activations are quantized per tensor/);
    assert.throws(() => qconfig({ weight: { ...int8PerChannelSym, signed: false }, activation: null }), /weights are signed/);
    assert.throws(() => qconfig({ weight: { ...binarySignPerChannel, signed: false }, activation: null }), /'signed: false' conflicts/);
    assert.throws(() => qconfig({ weight: { kind: 'lsqPlus', bits: 4, symmetric: true }, activation: null }), /LSQ\+ learns an offset/);
    assert.throws(() => qconfig({ weight: { kind: 'pact', bits: 4 }, activation: null }), /kind 'pact' does not quantize weights at 4 bits \(kinds that do: ste/);
    assert.throws(() => qconfig({ weight: null, activation: ternaryTwn }), /kind 'ternary' does not quantize activations/);
    assert.throws(() => qconfig({ weight: { ...int8PerChannelSym, granularity: 'tensor', axis: 1 }, activation: null }), /'axis' conflicts/);
    assert.throws(() => qconfig({ weight: null, activation: null, bias: null } as never), /unknown keys bias/);
    assert.throws(() => qconfig({ weight: null } as never), /both 'weight' and 'activation'/);
  });

  it('qconfigFor: every valid scheme × estimator validates; others throw naming the valid ones', () => {
    let count = 0;
    for (const scheme of SCHEMES) {
      for (const estimator of ESTIMATORS) {
        if (estimatorsFor(scheme).includes(estimator)) {
          const c = qconfigFor(scheme, estimator);
          assert.ok(c.weight && c.activation, `${scheme}/${estimator}`);
          count++;
        } else {
          assert.throws(() => qconfigFor(scheme, estimator), new RegExp(`estimator '${estimator}' does not apply to scheme '${scheme}'.*valid: `));
        }
      }
    }
    assert.ok(count >= 25);
    assert.equal(qconfigFor('w4a4', 'lsq').weight!.bits, 4);
    assert.equal(qconfigFor('w2a2', 'pact').activation!.kind, 'pact');
    assert.equal(qconfigFor('w1a1', 'irnet').weight!.kind, 'irnet');
    assert.deepEqual(qconfigFor('w1a1', 'binary').activation, uint1Lsq);
    assert.equal(qconfigFor('w1a1', 'irnet', { signActivations: true }).activation!.kind, 'irnet');
    assert.equal(qconfigFor('w1a1', 'smoothBinary', { signActivations: true }).activation!.kind, 'binary');
    assert.equal(qconfigFor('ternary', 'ternary').weight!.kind, 'ternary');
    assert.equal(qconfigFor('ternary', 'ternary').activation!.bits, 8);
    assert.equal(qconfigFor('ternary', 'lsq', { activationBits: 4 }).activation!.bits, 4);
    assert.throws(() => qconfigFor('w4a4', 'binary'), /use scheme w1a1/);
  });
});

describe('quant/config: resolvePlan', () => {
  const byName = (table: ResolvedLayer[]): Map<string, ResolvedLayer> => new Map(table.map((r) => [r.name, r]));

  it('default + glob and type overrides, first/last layers at 8 bits, 8-bit image input', () => {
    const model = lenet5();
    const plan: QuantPlan = {
      default: w4a4,
      overrides: [
        { match: { type: 'Linear' }, config: { weight: { ...int4Lsq, bits: 3 } } },
        { match: 'fc?', config: { activation: { ...uint4Lsq, bits: 2 } } },
        { match: 'conv*', config: { weight: { ...int4Lsq, bits: 5 } } },
      ],
    };
    const t = byName(resolvePlan(model, plan));
    assert.deepEqual([...t.keys()], ['conv1', 'conv2', 'fc1', 'fc2', 'fc3']);
    // First layer: 8-bit weight (same kind), the image input quantized with int8PerTensorAffine.
    assert.deepEqual(t.get('conv1')!.weightSpec, { ...int4Lsq, bits: 8 });
    assert.deepEqual(t.get('conv1')!.activationSpec, int8PerTensorAffine);
    assert.equal(t.get('conv2')!.weightSpec!.bits, 5);
    assert.equal(t.get('conv2')!.activationSpec!.bits, 4);
    assert.equal(t.get('fc1')!.weightSpec!.bits, 3);
    assert.equal(t.get('fc1')!.activationSpec!.bits, 2);
    // Last layer: 8 bits on both.
    assert.equal(t.get('fc3')!.weightSpec!.bits, 8);
    assert.equal(t.get('fc3')!.activationSpec!.bits, 8);
    assert.equal(t.get('fc3')!.type, 'Linear');
  });

  it('keepFirstLast8bit: false, inputActivation, null overrides and exact names', () => {
    const model = lenet5();
    const t = byName(resolvePlan(model, { default: w4a4, keepFirstLast8bit: false, inputActivation: 'layer' }));
    for (const r of t.values()) assert.equal(r.weightSpec!.bits, 4);
    assert.deepEqual(t.get('conv1')!.activationSpec, w4a4.activation);

    // fc3 kept float: the last *quantized* layer is fc2; an exact-name override beats the 8-bit rule.
    const t2 = byName(resolvePlan(model, {
      default: w4a4,
      overrides: [{ match: 'fc3', config: null }, { match: 'conv1', config: { weight: { ...int4Lsq, bits: 2 } } }],
      inputActivation: null,
    }));
    assert.deepEqual(t2.get('fc3'), { name: 'fc3', type: 'Linear', weightSpec: null, activationSpec: null, fusedBatchNorm: null });
    assert.equal(t2.get('fc2')!.weightSpec!.bits, 8);
    assert.equal(t2.get('conv1')!.weightSpec!.bits, 2);
    assert.equal(t2.get('conv1')!.activationSpec!.bits, 4, 'exact override: no input rule either');

    const t3 = byName(resolvePlan(model, { default: w4a4, inputActivation: null }));
    assert.equal(t3.get('conv1')!.activationSpec, null);
  });

  it('binary and ternary specs become int8 / uint8 at the first and last layers', () => {
    const t = byName(resolvePlan(mlp({ hidden: [8, 8], inputSize: 6 }), { default: w1a1 }));
    assert.deepEqual(t.get('1')!.weightSpec, int8PerChannelSym);
    assert.deepEqual(t.get('1')!.activationSpec, int8PerTensorAffine);
    assert.deepEqual(t.get('3')!.weightSpec, w1a1.weight);
    assert.deepEqual(t.get('5')!.weightSpec, int8PerChannelSym);
    assert.deepEqual(t.get('5')!.activationSpec, { ...uint1Lsq, bits: 8 });
    const ternaryTable = byName(resolvePlan(mlp({ hidden: [8, 8], inputSize: 6 }), { default: qconfigFor('ternary', 'ternary') }));
    assert.deepEqual(ternaryTable.get('5')!.weightSpec, int8PerChannelSym);
    assert.deepEqual(ternaryTable.get('3')!.weightSpec, ternaryTwn);
    const dorefaTable = byName(resolvePlan(mlp({ hidden: [8, 8], inputSize: 6 }), { default: qconfigFor('w4a4', 'dorefa') }));
    assert.deepEqual(dorefaTable.get('5')!.weightSpec, int8PerChannelSym, 'DoReFa weights are replaced');
    assert.deepEqual(dorefaTable.get('5')!.activationSpec, { kind: 'dorefa', bits: 8, signed: false }, 'DoReFa activations are widened');
  });

  it('finds Conv2d→BatchNorm2d pairs in Sequentials (and explicit pairs)', () => {
    const t = byName(resolvePlan(cnn({ channels: [4, 8], hidden: 16 }), { default: w4a4 }));
    assert.equal(t.get('features.0')!.fusedBatchNorm, 'features.1');
    assert.equal(t.get('features.10')!.fusedBatchNorm, 'features.11');
    assert.equal(t.get('classifier.1')!.fusedBatchNorm, null, 'Linear + BatchNorm1d is not folded');
    const none = resolvePlan(cnn({ channels: [4, 8], hidden: 16 }), { default: w4a4 }, { fuseBatchNorm: false });
    assert.ok(none.every((r) => r.fusedBatchNorm === null));

    class Named extends Sequential {}
    const custom = new Named(new Conv2d(1, 2, 3), new ReLU(), new BatchNorm2d(2), new Flatten(), new Linear(2, 2));
    assert.equal(byName(resolvePlan(custom, { default: w4a4 })).get('0')!.fusedBatchNorm, null);
    assert.equal(byName(resolvePlan(custom, { default: w4a4 }, { fusePairs: [['0', '2']] })).get('0')!.fusedBatchNorm, '2');
    assert.throws(() => resolvePlan(custom, { default: w4a4 }, { fusePairs: [['1', '2']] }), /'1' is a ReLU, not a Conv2d/);
  });

  it('overrides matching nothing, bad matches and invalid configs throw clearly', () => {
    const model = lenet5();
    assert.throws(() => resolvePlan(model, { default: w4a4, overrides: [{ match: 'features.*', config: null }] }), /'features\.\*' match no layer \(layers: conv1 \(Conv2d\)/);
    assert.throws(() => resolvePlan(model, { default: w4a4, overrides: [{ match: { type: 'Lstm' as 'Linear' }, config: null }] }), /match must be a name glob or \{ type/);
    assert.throws(() => resolvePlan(model, { default: w4a4, overrides: [{ match: 'fc1', config: { weight: { kind: 'lsq', bits: 99 } } }] }), /overrides\[0\] \('fc1'\) on 'fc1'.*bits must be in/);
    assert.throws(() => resolvePlan(model, { default: w4a4, keepFirst: true } as never), /unknown keys keepFirst/);
  });

  it('the table is JSON: it round-trips, and planFromTable reproduces it', () => {
    const model = cnn({ channels: [4, 8], hidden: 16 });
    const table = resolvePlan(model, { default: qconfigFor('w2a2', 'lsq'), overrides: [{ match: 'classifier.**', config: { weight: int4Lsq } }] });
    const json = JSON.stringify(table);
    const parsed = JSON.parse(json) as ResolvedLayer[];
    assert.deepEqual(parsed, table);
    assert.deepEqual(resolvePlan(model, planFromTable(parsed)), table);
    assert.deepEqual(JSON.parse(JSON.stringify(planFromTable(table))), planFromTable(table));
    assert.equal(table.find((r) => r.name === 'classifier.1')!.weightSpec!.bits, 4);
    assert.equal(table.find((r) => r.name === 'features.3')!.weightSpec!.bits, 2);
  });
});

describe('quant/qat/cli: --quant and --estimator', () => {
  it('maps CLI values to plans', () => {
    assert.equal(qatFromCliOptions({ quant: 'fp32' }), null);
    assert.deepEqual(qatFromCliOptions({ quant: 'w4a4' })!.default, qconfigFor('w4a4', 'lsq'));
    assert.deepEqual(qatFromCliOptions({ quant: 'w8a8', estimator: 'pact' })!.default, qconfigFor('w8a8', 'pact'));
    assert.equal(qatFromCliOptions({ quant: 'w1a1' })!.default.weight!.kind, 'binary');
    assert.throws(() => qatFromCliOptions({ quant: 'w1a1', estimator: 'lsq' }), /--estimator lsq does not apply to --quant w1a1; valid: binary, irnet, smoothBinary, adaste/);
    assert.throws(() => qatFromCliOptions({ quant: 'fp32', estimator: 'lsq' }), /needs a quantization scheme/);
    assert.deepEqual([...QUANT_CHOICES], ['fp32', 'w8a8', 'w4a4', 'w2a2', 'w1a1', 'ternary']);
    assert.equal(quantCliOptions.quant.default, 'fp32');
  });
});
