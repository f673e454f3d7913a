import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, symlinkSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import {
  OnnxDataType,
  OnnxError,
  decodeModel,
  encodeModel,
  makeTensor,
  readOnnx,
  tensorToInts,
  tensorValue,
  writeOnnx,
  type OnnxModel,
  type OnnxTensor,
} from './proto.ts';

/** Protobuf wire encoding by hand, independent of protobufjs: varint, tag, length-delimited. */
function varint(n: number): number[] {
  const out: number[] = [];
  let v = BigInt.asUintN(64, BigInt(n));
  do {
    let byte = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) byte |= 0x80;
    out.push(byte);
  } while (v > 0n);
  return out;
}
const field = (id: number, wire: number): number[] => varint(id * 8 + wire);
const lenField = (id: number, payload: number[]): number[] => [...field(id, 2), ...varint(payload.length), ...payload];
const strField = (id: number, s: string): number[] => lenField(id, [...new TextEncoder().encode(s)]);
const intField = (id: number, n: number): number[] => [...field(id, 0), ...varint(n)];

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof OnnxError, `expected OnnxError, got ${String(e)}`);
    return e.code;
  }
  assert.fail('did not throw');
}

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'lowbit-onnx-'));
}

describe('onnx/proto: schema', () => {
  it('decodes hand-encoded bytes by the official field numbers', () => {
    // ModelProto{ir_version=1: 8, opset_import=8: {domain=1: "", version=2: 17}, producer_name=2,
    //   graph=7: {node=1: {input=1, output=2, name=3, op_type=4, attribute=5: {name=1, i=3, type=20}},
    //   initializer=5: {dims=1 (packed), data_type=2, name=8, raw_data=9}, input=11, output=12}}
    const attribute = [...strField(1, 'axis'), ...intField(3, -1), ...intField(20, 2)];
    const node = [...strField(1, 'x'), ...strField(2, 'y'), ...strField(3, 'n0'), ...strField(4, 'Softmax'), ...lenField(5, attribute)];
    const raw = [0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0]; // float32 1, -2
    const init = [...lenField(1, [...varint(2)]), ...intField(2, 1), ...strField(8, 'w'), ...lenField(9, raw)];
    const valueInfo = (name: string): number[] => [...strField(1, name), ...lenField(2, lenField(1, intField(1, 1)))];
    const graph = [...lenField(1, node), ...lenField(5, init), ...lenField(11, valueInfo('x')), ...lenField(12, valueInfo('y'))];
    const bytes = Uint8Array.from([...intField(1, 8), ...lenField(8, [...strField(1, ''), ...intField(2, 17)]), ...strField(2, 'hand'), ...lenField(7, graph)]);
    const m = decodeModel(bytes);
    assert.equal(m.irVersion, 8);
    assert.equal(m.producerName, 'hand');
    assert.deepEqual(m.opsetImport, [{ domain: '', version: 17 }]);
    const n = m.graph!.node![0]!;
    assert.deepEqual([n.input, n.output, n.name, n.opType], [['x'], ['y'], 'n0', 'Softmax']);
    assert.equal(n.attribute![0]!.i, -1);
    assert.equal(n.attribute![0]!.type, 2);
    assert.deepEqual(Array.from(tensorValue(m.graph!.initializer![0]!).data), [1, -2]);
    assert.equal(m.graph!.input![0]!.type!.tensorType!.elemType, 1);
    // And encoding gives the same bytes back (protobufjs writes fields in id order, as here within messages).
    const again = decodeModel(encodeModel(m));
    assert.deepEqual(again, m);
  });

  it('round-trips every message kind', () => {
    const model: OnnxModel = {
      irVersion: 10,
      opsetImport: [{ domain: '', version: 21 }, { domain: 'com.example', version: 1 }],
      producerName: 'lowbit', producerVersion: '0.1', domain: 'x', modelVersion: 3, docString: 'doc',
      metadataProps: [{ key: 'k', value: 'v' }],
      graph: {
        name: 'g',
        node: [{ opType: 'Identity', input: ['a'], output: ['b'], name: 'id', domain: '', overload: 'o', docString: 'd', metadataProps: [{ key: 'a', value: 'b' }],
          attribute: [
            { name: 'fs', type: 6, floats: [0.5, -1] }, { name: 's', type: 3, s: new TextEncoder().encode('hi') },
            { name: 't', type: 4, t: makeTensor('c', OnnxDataType.INT8, [2], [-3, 4]) },
            { name: 'g', type: 5, g: { name: 'sub', node: [] } },
          ] }],
        initializer: [makeTensor('i4', OnnxDataType.INT4, [3], [-8, 7, -1])],
        sparseInitializer: [{ values: makeTensor('sv', OnnxDataType.FLOAT, [1], [2]), indices: makeTensor('si', OnnxDataType.INT64, [1], [3]), dims: [4] }],
        input: [{ name: 'a', type: { tensorType: { elemType: 1, shape: { dim: [{ dimParam: 'N', denotation: 'DATA_BATCH' }, { dimValue: 3 }] } } } }],
        output: [{ name: 'b', type: { sequenceType: { elemType: { tensorType: { elemType: 7 } } } } }],
        valueInfo: [{ name: 'v', type: { optionalType: { elemType: { mapType: { keyType: 7, valueType: { sparseTensorType: { elemType: 1 } } } } } } }],
        quantizationAnnotation: [{ tensorName: 'b', quantParameterTensorNames: [{ key: 'SCALE_TENSOR', value: 's' }] }],
      },
      trainingInfo: [{ initialization: { name: 'init' }, updateBinding: [{ key: 'x', value: 'y' }] }],
      functions: [{ name: 'f', domain: 'com.example', input: ['x'], output: ['y'], attribute: ['alpha'], node: [{ opType: 'Relu', input: ['x'], output: ['y'] }], opsetImport: [{ domain: '', version: 21 }] }],
    };
    const decoded = decodeModel(encodeModel(model));
    assert.deepEqual(decodeModel(encodeModel(decoded)), decoded);
    assert.equal(decoded.graph!.node![0]!.overload, 'o');
    assert.deepEqual(tensorToInts(decoded.graph!.initializer![0]!), [-8, 7, -1]);
    assert.deepEqual(Array.from(decoded.graph!.node![0]!.attribute![1]!.s!), [104, 105]);
    assert.equal(decoded.graph!.valueInfo![0]!.type!.optionalType!.elemType!.mapType!.valueType!.sparseTensorType!.elemType, 1);
    assert.equal(decoded.functions![0]!.attribute![0], 'alpha');
  });

  it('rejects ill-typed models when encoding', () => {
    assert.equal(code(() => encodeModel({ irVersion: 'x' as unknown as number })), 'bad-input');
  });
});

describe('onnx/proto: tensors', () => {
  const t = (patch: OnnxTensor): OnnxTensor => ({ name: 't', ...patch });

  it('decodes raw data little-endian and every typed field', () => {
    assert.deepEqual(Array.from(tensorValue(t({ dataType: 1, dims: [2], floatData: [1.5, -2] })).data), [1.5, -2]);
    assert.deepEqual(Array.from(tensorValue(t({ dataType: 6, dims: [2], rawData: Uint8Array.of(1, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff) })).data), [1, -2]);
    assert.deepEqual(Array.from(tensorValue(t({ dataType: 7, dims: [2], int64Data: [5, -3] })).data), [5, -3]);
    assert.deepEqual(Array.from(tensorValue(t({ dataType: 11, dims: [1], doubleData: [0.1] })).data), [0.1]);
    assert.deepEqual(Array.from(tensorValue(t({ dataType: 12, dims: [1], uint64Data: [4294967295] })).data), [4294967295]);
    assert.deepEqual(Array.from(tensorValue(t({ dataType: 3, dims: [3], int32Data: [-128, 0, 127] })).data), [-128, 0, 127]);
    assert.deepEqual(Array.from(tensorValue(t({ dataType: 9, dims: [3], rawData: Uint8Array.of(0, 1, 7) })).data), [0, 1, 1]);
    // float16 bits: 0x3c00 = 1, 0xc000 = -2, 0x7bff = 65504, 0x0001 = 2^-24 (subnormal)
    assert.deepEqual(Array.from(tensorValue(t({ dataType: 10, dims: [4], int32Data: [0x3c00, 0xc000, 0x7bff, 1] })).data), [1, -2, 65504, 2 ** -24]);
    // bfloat16 0x3fc0 = 1.5, 0xc120 = -10
    assert.deepEqual(Array.from(tensorValue(t({ dataType: 16, dims: [2], rawData: Uint8Array.of(0xc0, 0x3f, 0x20, 0xc1) })).data), [1.5, -10]);
    assert.deepEqual(tensorValue(t({ dataType: 1, dims: [0, 3] })).data.length, 0);
  });

  it('unpacks int4 / uint4 with the first element in the low nibble', () => {
    // 0x7f: low 0xf (-1 / 15), high 0x7; 0x08: low 0x8 (-8 / 8)
    assert.deepEqual(Array.from(tensorValue(t({ dataType: 22, dims: [3], rawData: Uint8Array.of(0x7f, 0x08) })).data), [-1, 7, -8]);
    assert.deepEqual(Array.from(tensorValue(t({ dataType: 21, dims: [3], rawData: Uint8Array.of(0x7f, 0x08) })).data), [15, 7, 8]);
    assert.deepEqual(Array.from(tensorValue(t({ dataType: 22, dims: [2], int32Data: [0x9a] })).data), [-6, -7]);
    assert.deepEqual(Array.from(makeTensor('q', OnnxDataType.INT4, [3], [-1, 7, -8]).rawData!), [0x7f, 0x08]);
    assert.deepEqual(Array.from(makeTensor('q', OnnxDataType.UINT4, [2], [15, 1]).rawData!), [0x1f]);
  });

  it('checks int64 range: exact within ±2^53, saturated on request, else an error', () => {
    const raw = new Uint8Array(16);
    new DataView(raw.buffer).setBigInt64(0, 2n ** 63n - 1n, true);
    new DataView(raw.buffer).setBigInt64(8, -(2n ** 53n) + 1n, true);
    const big = t({ dataType: 7, dims: [2], rawData: raw });
    assert.equal(code(() => tensorValue(big)), 'int64-range');
    assert.deepEqual(Array.from(tensorValue(big, { saturate: true }).data), [Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER]);
  });

  it('rejects data that does not match dims or type', () => {
    assert.equal(code(() => tensorValue(t({ dataType: 1, dims: [3], rawData: new Uint8Array(8) }))), 'bad-tensor');
    assert.equal(code(() => tensorValue(t({ dataType: 1, dims: [3], floatData: [1, 2] }))), 'bad-tensor');
    assert.equal(code(() => tensorValue(t({ dataType: 1, dims: [1], floatData: [1], rawData: new Uint8Array(4) }))), 'bad-tensor');
    assert.equal(code(() => tensorValue(t({ dataType: 1, dims: [1], int32Data: [1] }))), 'bad-tensor');
    assert.equal(code(() => tensorValue(t({ dataType: 3, dims: [1], int32Data: [300] }))), 'bad-tensor');
    assert.equal(code(() => tensorValue(t({ dataType: 1, dims: [-1] }))), 'bad-tensor');
    assert.equal(code(() => tensorValue(t({ dataType: 1, dims: [2 ** 20, 2 ** 20] }))), 'bad-tensor');
    assert.equal(code(() => tensorValue(t({ dataType: 8, dims: [1], stringData: [new Uint8Array(1)] }))), 'unsupported-data-type');
    assert.equal(code(() => tensorValue(t({ dataType: 17, dims: [1], rawData: new Uint8Array(1) }))), 'unsupported-data-type');
    assert.equal(code(() => tensorValue(t({ dataType: 99, dims: [1] }))), 'unsupported-data-type');
    assert.equal(code(() => tensorValue(t({ dataType: 1, dims: [1], dataLocation: 1, externalData: [{ key: 'location', value: 'w.bin' }] }))), 'external-data');
  });

  it('makeTensor writes every type so that tensorValue reads it back', () => {
    const cases: [number, number[]][] = [
      [OnnxDataType.FLOAT, [1.5, -0.25]], [OnnxDataType.DOUBLE, [0.1, -7]], [OnnxDataType.INT8, [-128, 127]], [OnnxDataType.UINT8, [0, 255]],
      [OnnxDataType.INT16, [-32768, 5]], [OnnxDataType.UINT16, [65535, 0]], [OnnxDataType.INT32, [-(2 ** 31), 2 ** 31 - 1]],
      [OnnxDataType.UINT32, [2 ** 32 - 1, 1]], [OnnxDataType.INT64, [-(2 ** 53) + 1, 2 ** 40]], [OnnxDataType.UINT64, [2 ** 52, 0]],
      [OnnxDataType.BOOL, [1, 0]], [OnnxDataType.FLOAT16, [1, -65504]],
    ];
    for (const [type, values] of cases) assert.deepEqual(Array.from(tensorValue(makeTensor('x', type, [2], values)).data), values, `type ${type}`);
    assert.equal(code(() => makeTensor('x', OnnxDataType.INT8, [1], [128])), 'bad-input');
    assert.equal(code(() => makeTensor('x', OnnxDataType.FLOAT, [3], [1])), 'bad-input');
  });

  it('rounds float16 to nearest even', () => {
    const half = (v: number): number => new DataView(makeTensor('h', OnnxDataType.FLOAT16, [1], [v]).rawData!.buffer).getUint16(0, true);
    assert.equal(half(1 + 2 ** -11), 0x3c00); // tie -> even (1.0)
    assert.equal(half(1 + 3 * 2 ** -11), 0x3c02); // tie -> even (1 + 2^-9)
    assert.equal(half(65520), 0x7c00); // rounds to +inf
    assert.equal(half(2 ** -25 + 2 ** -30), 0x0001); // above half the smallest subnormal
    assert.equal(half(-0), 0x8000);
  });
});

describe('onnx/proto: wire-level validation', () => {
  const valid = encodeModel({ irVersion: 9, graph: { name: 'g', initializer: [makeTensor('w', OnnxDataType.FLOAT, [2], [1, 2])] } });

  it('types every malformation', () => {
    assert.equal(code(() => decodeModel(valid.subarray(0, valid.length - 1))), 'truncated');
    assert.equal(code(() => decodeModel(Uint8Array.of(0x0f))), 'bad-wire'); // wire type 7
    assert.equal(code(() => decodeModel(Uint8Array.of(0x0b, 0x0c))), 'bad-wire'); // group
    assert.equal(code(() => decodeModel(Uint8Array.of(0x3d, 0, 0, 0, 0))), 'bad-wire'); // graph (message) as fixed32
    assert.equal(code(() => decodeModel(Uint8Array.of(0x3a, 0xff, 0xff, 0xff, 0xff, 0x0f))), 'bad-wire'); // length 2^32 - 1
    assert.equal(code(() => decodeModel(Uint8Array.of(0x3a, 0x7f))), 'truncated'); // length past the end
    assert.equal(code(() => decodeModel(Uint8Array.of(0x08, ...Array(10).fill(0xff), 0x01))), 'bad-wire'); // 11-byte varint
    assert.equal(code(() => decodeModel(Uint8Array.of(0x00))), 'bad-wire'); // field 0
    // GraphProto.node -> NodeProto.attribute -> AttributeProto.g -> GraphProto ... 100 levels deep
    let nested: number[] = [];
    for (let i = 0; i < 99; i++) nested = lenField([1, 5, 6][(98 - i) % 3]!, nested);
    assert.equal(code(() => decodeModel(Uint8Array.from(lenField(7, nested)))), 'too-deep');
    assert.equal(code(() => decodeModel(valid, { maxBytes: 4 })), 'too-large');
  });

  it('skips unknown fields and keeps known ones', () => {
    const withUnknown = Uint8Array.from([...intField(1, 7), ...intField(99, 5), ...lenField(100, [1, 2, 3]), 0xa5, 0x06, 1, 2, 3, 4]);
    assert.equal(decodeModel(withUnknown).irVersion, 7);
  });
});

describe('onnx/proto: files and external data', () => {
  const model = (): OnnxModel => ({
    irVersion: 9,
    opsetImport: [{ domain: '', version: 17 }],
    graph: { name: 'g', initializer: [makeTensor('big', OnnxDataType.FLOAT, [600], Array.from({ length: 600 }, (_, i) => i / 8)), makeTensor('small', OnnxDataType.INT64, [2], [3, -4])] },
  });

  it('writes atomically and reads back', () => {
    const dir = tmp();
    const path = join(dir, 'm.onnx');
    const bytes = writeOnnx(path, model());
    assert.deepEqual(new Uint8Array(readFileSync(path)), bytes);
    assert.deepEqual(readdirSync(dir), ['m.onnx']);
    assert.deepEqual(readOnnx(path).graph!.initializer![1]!.rawData, model().graph!.initializer![1]!.rawData);
    assert.equal(code(() => readOnnx(join(dir, 'missing.onnx'))), 'io');
  });

  it('moves large tensors to an aligned side file and loads them back', () => {
    const dir = tmp();
    const path = join(dir, 'm.onnx');
    writeOnnx(path, model(), { externalData: { threshold: 1024 } });
    assert.deepEqual(readdirSync(dir).sort(), ['m.onnx', 'm.onnx.data']);
    assert.equal(readFileSync(join(dir, 'm.onnx.data')).length, 2400);
    const raw = decodeModel(new Uint8Array(readFileSync(path)));
    const big = raw.graph!.initializer![0]!;
    assert.equal(big.dataLocation, 1);
    assert.deepEqual(big.externalData, [{ key: 'location', value: 'm.onnx.data' }, { key: 'offset', value: '0' }, { key: 'length', value: '2400' }]);
    const back = readOnnx(path);
    assert.deepEqual(Array.from(tensorValue(back.graph!.initializer![0]!).data), Array.from({ length: 600 }, (_, i) => i / 8));
    assert.equal(back.graph!.initializer![1]!.dataLocation, undefined);
  });

  it('refuses external data outside the model folder or outside the file', () => {
    const dir = tmp();
    mkdirSync(join(dir, 'model'));
    writeFileSync(join(dir, 'outside.bin'), new Uint8Array(16));
    writeFileSync(join(dir, 'model', 'w.bin'), new Uint8Array(16));
    symlinkSync(join(dir, 'outside.bin'), join(dir, 'model', 'link.bin'));
    const withExternal = (entries: [string, string][]): Uint8Array => encodeModel({
      irVersion: 9,
      graph: { initializer: [{ name: 'w', dataType: 1, dims: [4], dataLocation: 1, externalData: entries.map(([key, value]) => ({ key, value })) }] },
    });
    const base = join(dir, 'model');
    const decode = (entries: [string, string][]): unknown => decodeModel(withExternal(entries), { baseDir: base });
    assert.deepEqual(Array.from(tensorValue((decode([['location', 'w.bin']]) as OnnxModel).graph!.initializer![0]!).data), [0, 0, 0, 0]);
    for (const location of ['../outside.bin', 'sub/../../outside.bin', '/etc/passwd', join(dir, 'outside.bin'), 'C:\\x.bin', '..\\outside.bin', '', '.', 'a\0b']) {
      assert.equal(code(() => decode([['location', location]])), 'external-data', location);
      // Path syntax is refused even without a baseDir (nothing is read then).
      if (location !== join(dir, 'outside.bin')) assert.equal(code(() => decodeModel(withExternal([['location', location]]))), 'external-data', location);
    }
    assert.equal(code(() => decode([['location', 'link.bin']])), 'external-data'); // symlink out of the folder
    assert.equal(code(() => decode([['location', 'missing.bin']])), 'external-data');
    assert.equal(code(() => decode([['location', 'w.bin'], ['offset', '8'], ['length', '16']])), 'external-data');
    assert.equal(code(() => decode([['location', 'w.bin'], ['offset', '17']])), 'external-data');
    assert.equal(code(() => decode([['location', 'w.bin'], ['offset', '-1']])), 'external-data');
    assert.equal(code(() => decode([['location', 'w.bin'], ['length', '1e3']])), 'external-data');
    assert.equal(code(() => decode([['offset', '0']])), 'external-data');
    assert.equal(code(() => decode([['location', 'w.bin'], ['location', 'w.bin']])), 'external-data');
    // offset 8, length 8: the second half, a 2-float tensor would need 8 bytes -> dims 4 mismatch
    const half = decode([['location', 'w.bin'], ['offset', '8'], ['length', '8']]) as OnnxModel;
    assert.equal(code(() => tensorValue(half.graph!.initializer![0]!)), 'bad-tensor');
    // A FIFO, as the model or as its external data, is refused before it is opened (the open
    // would wait for a writer forever).
    if (spawnSync('mkfifo', [join(base, 'pipe.bin')]).status === 0) {
      assert.equal(code(() => decode([['location', 'pipe.bin']])), 'external-data');
      assert.equal(code(() => readOnnx(join(base, 'pipe.bin'))), 'io');
    }
  });
});
