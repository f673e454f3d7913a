/**
 * The name and initializer bookkeeping shared by the ONNX exporters (export.ts for image models,
 * rnn.ts and transformer.ts for sequence models): unique safe names, initializers, shared constants, attributes.
 * @internal
 */
import { makeTensor, OnnxAttributeType, OnnxDataType, OnnxError, type OnnxAttribute, type OnnxNode, type OnnxTensor } from './proto.ts';

/** Nodes and initializers with unique names. @internal */
export class NamedGraph {
  readonly nodes: OnnxNode[] = [];
  readonly initializers: OnnxTensor[] = [];
  private readonly used = new Set<string>();
  private readonly constants = new Map<string, string>();

  /** `base` made unique (and safe: letters, digits, '.', '_', '/', ':', '-'). */
  name(base: string): string {
    const clean = base.replace(/[^A-Za-z0-9._/:-]/g, '_') || 'v';
    let n = clean;
    for (let i = 1; this.used.has(n); i++) n = `${clean}_${i}`;
    this.used.add(n);
    return n;
  }

  /** Reserves a name exactly (graph input / output); throws if taken. */
  reserve(name: string): string {
    if (this.used.has(name)) throw new OnnxError('bad-input', `ONNX export: name '${name}' is used twice`);
    this.used.add(name);
    return name;
  }

  tensor(base: string, dataType: number, dims: readonly number[], values: ArrayLike<number>): string {
    const name = this.name(base);
    this.initializers.push(makeTensor(name, dataType, dims, values));
    return name;
  }

  float(base: string, dims: readonly number[], values: ArrayLike<number>): string {
    return this.tensor(base, OnnxDataType.FLOAT, dims, values);
  }

  /** The value stored under `key`, made by `make` the first time (shared constants). */
  protected shared(key: string, make: () => string): string {
    let name = this.constants.get(key);
    if (name === undefined) {
      name = make();
      this.constants.set(key, name);
    }
    return name;
  }

  /** A shared scalar constant of `dataType` (INT8, UINT8, FLOAT, ...). */
  typedScalar(value: number, dataType: number): string {
    return this.shared(`t${dataType}:${value}`, () => this.tensor(`const_${value}`, dataType, [], [value]));
  }

  /** Appends a node with one output named after `base` (the node itself `opType_index`); returns the output. */
  singleOutput(opType: string, inputs: readonly string[], base: string, attributes: OnnxAttribute[] = []): string {
    const output = this.name(base);
    this.nodes.push({ name: this.name(`${opType}_${this.nodes.length}`), opType, input: [...inputs], output: [output], attribute: attributes });
    return output;
  }
}

export function attrInt(name: string, i: number): OnnxAttribute {
  return { name, type: OnnxAttributeType.INT, i };
}

export function attrInts(name: string, ints: readonly number[]): OnnxAttribute {
  return { name, type: OnnxAttributeType.INTS, ints: [...ints] };
}

export function attrFloat(name: string, f: number): OnnxAttribute {
  return { name, type: OnnxAttributeType.FLOAT, f };
}

export function attrString(name: string, s: string): OnnxAttribute {
  return { name, type: OnnxAttributeType.STRING, s: new TextEncoder().encode(s) };
}
