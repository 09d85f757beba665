/**
 * A small ONNX graph writer: enough of onnx.proto (ModelProto, GraphProto, NodeProto,
 * TensorProto, ValueInfoProto, AttributeProto) to emit float32 inference graphs that
 * onnxruntime-node loads. Training writes its models with it; tests build tiny graphs with it.
 */
import protobuf from 'protobufjs';

// Field numbers follow onnx/onnx.proto (IR version 8). Only what we emit is declared.
const ONNX_PROTO = `
syntax = "proto3";
package onnx;
message AttributeProto {
  string name = 1; float f = 2; int64 i = 3; bytes s = 4; TensorProto t = 5;
  repeated float floats = 7; repeated int64 ints = 8; int32 type = 20;
}
message ValueInfoProto { string name = 1; TypeProto type = 2; }
message NodeProto {
  repeated string input = 1; repeated string output = 2; string name = 3; string op_type = 4;
  repeated AttributeProto attribute = 5; string domain = 7;
}
message TensorShapeProto {
  message Dimension { oneof value { int64 dim_value = 1; string dim_param = 2; } }
  repeated Dimension dim = 1;
}
message TypeProto {
  message Tensor { int32 elem_type = 1; TensorShapeProto shape = 2; }
  oneof value { Tensor tensor_type = 1; }
}
message TensorProto {
  repeated int64 dims = 1; int32 data_type = 2; repeated float float_data = 4;
  repeated int64 int64_data = 7; string name = 8; bytes raw_data = 9;
}
message GraphProto {
  repeated NodeProto node = 1; string name = 2; repeated TensorProto initializer = 5;
  string doc_string = 10; repeated ValueInfoProto input = 11; repeated ValueInfoProto output = 12;
}
message OperatorSetIdProto { string domain = 1; int64 version = 2; }
message ModelProto {
  int64 ir_version = 1; string producer_name = 2; string producer_version = 3; string domain = 4;
  int64 model_version = 5; string doc_string = 6; GraphProto graph = 7;
  repeated OperatorSetIdProto opset_import = 8;
}
`;

const root = protobuf.parse(ONNX_PROTO, { keepCase: true }).root;
const ModelProto = root.lookupType('onnx.ModelProto');

const FLOAT = 1;
const INT64 = 7;
const ATTR = { FLOAT: 1, INT: 2, FLOATS: 6, INTS: 7 } as const;

/** A dimension: a fixed size, or a name for a dynamic one (e.g. 'batch'). */
export type Dim = number | string;

/** An attribute value: number → INT when integral and `int` is set, else FLOAT; arrays likewise. */
export type AttrValue = { int: number } | { float: number } | { ints: number[] } | { floats: number[] };

interface NodeSpec {
  op: string;
  inputs: string[];
  outputs: string[];
  attrs?: Record<string, AttrValue>;
}

/** Accumulates nodes, initializers, inputs and outputs; `toBytes()` serializes the model. */
export class OnnxGraphBuilder {
  private readonly nodes: NodeSpec[] = [];
  private readonly initializers: Array<{ name: string; dims: number[]; data: Float32Array | BigInt64Array }> =
    [];
  private readonly inputs: Array<{ name: string; dims: Dim[] }> = [];
  private readonly outputs: Array<{ name: string; dims: Dim[] }> = [];
  private counter = 0;

  constructor(readonly name: string) {}

  /** Declares a float32 graph input. */
  input(name: string, dims: Dim[]): string {
    this.inputs.push({ name, dims });
    return name;
  }

  /** Declares a float32 graph output (an existing value name). */
  output(name: string, dims: Dim[]): string {
    this.outputs.push({ name, dims });
    return name;
  }

  /** Adds a float32 constant tensor; `data.length` must equal the product of `dims`. */
  constant(name: string, dims: number[], data: ArrayLike<number>): string {
    const size = dims.reduce((a, b) => a * b, 1);
    if (data.length !== size)
      throw new RangeError(`constant ${name}: dims ${dims} need ${size} values, got ${data.length}`);
    this.initializers.push({ name, dims, data: Float32Array.from(data) });
    return name;
  }

  /** Adds an int64 constant tensor (for Reshape shapes, Gather indices, ...). */
  constantInt64(name: string, dims: number[], data: ArrayLike<number>): string {
    this.initializers.push({ name, dims, data: BigInt64Array.from(Array.from(data, (v) => BigInt(v))) });
    return name;
  }

  /** Adds a node and returns its (first) output name; output names are generated when omitted. */
  node(op: string, inputs: string[], attrs?: Record<string, AttrValue>, output?: string): string {
    const out = output ?? `${op.toLowerCase()}_${this.counter++}`;
    this.nodes.push({ op, inputs, outputs: [out], ...(attrs ? { attrs } : {}) });
    return out;
  }

  /** Serializes to ONNX protobuf bytes (IR version 8, default opset 17). */
  toBytes(opset = 17): Uint8Array {
    const dim = (d: Dim) => (typeof d === 'number' ? { dim_value: d } : { dim_param: d });
    const valueInfo = (v: { name: string; dims: Dim[] }) => ({
      name: v.name,
      type: { tensor_type: { elem_type: FLOAT, shape: { dim: v.dims.map(dim) } } },
    });
    const attribute = (name: string, v: AttrValue) => {
      if ('int' in v) return { name, type: ATTR.INT, i: v.int };
      if ('float' in v) return { name, type: ATTR.FLOAT, f: v.float };
      if ('ints' in v) return { name, type: ATTR.INTS, ints: v.ints };
      return { name, type: ATTR.FLOATS, floats: v.floats };
    };
    const message = ModelProto.fromObject({
      ir_version: 8,
      producer_name: 'crema-feature-jobs',
      producer_version: '1',
      opset_import: [{ domain: '', version: opset }],
      graph: {
        name: this.name,
        node: this.nodes.map((n, i) => ({
          name: `${n.op}_${i}`,
          op_type: n.op,
          input: n.inputs,
          output: n.outputs,
          attribute: Object.entries(n.attrs ?? {}).map(([k, v]) => attribute(k, v)),
        })),
        initializer: this.initializers.map((t) => ({
          name: t.name,
          dims: t.dims,
          data_type: t.data instanceof Float32Array ? FLOAT : INT64,
          raw_data: Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength),
        })),
        input: this.inputs.map(valueInfo),
        output: this.outputs.map(valueInfo),
      },
    });
    return ModelProto.encode(message).finish();
  }
}

/**
 * A dense multilayer perceptron `x → relu(xW1+b1) → … → xWn+bn [→ sigmoid]` as ONNX, the shape
 * every Crema model uses. Weights are row-major [in, out].
 */
export function buildMlp(opts: {
  name: string;
  inputName?: string;
  outputName?: string;
  layers: ReadonlyArray<{
    weights: ArrayLike<number>;
    bias: ArrayLike<number>;
    inSize: number;
    outSize: number;
  }>;
  sigmoid?: boolean;
}): Uint8Array {
  const g = new OnnxGraphBuilder(opts.name);
  const first = opts.layers[0];
  const last = opts.layers[opts.layers.length - 1];
  if (!first || !last) throw new RangeError('buildMlp: at least one layer');
  let x = g.input(opts.inputName ?? 'features', ['batch', first.inSize]);
  opts.layers.forEach((l, i) => {
    const w = g.constant(`w${i}`, [l.inSize, l.outSize], l.weights);
    const b = g.constant(`b${i}`, [l.outSize], l.bias);
    x = g.node('Gemm', [x, w, b]);
    if (i < opts.layers.length - 1) x = g.node('Relu', [x]);
  });
  const out = opts.outputName ?? 'score';
  g.node(opts.sigmoid ? 'Sigmoid' : 'Identity', [x], undefined, out);
  g.output(out, ['batch', last.outSize]);
  return g.toBytes();
}
