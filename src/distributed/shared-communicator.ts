/**
 * Collectives between worker threads over one SharedArrayBuffer, synchronised by Atomics barriers.
 */
import { CommunicatorError, sparseMessageBytes, type Communicator, type SparseMessage, type TrafficStats } from './communicator.ts';

// Control words (Int32): barrier arrivals, barrier generation, abort flag.
const ARRIVED = 0;
const GENERATION = 1;
const ABORT = 2;
const CONTROL_WORDS = 4;
const KIND_ALL_REDUCE = 1;
const KIND_ALL_GATHER = 2;
/** How long a barrier sleeps between checks of the abort flag (ms). */
const ABORT_POLL_MS = 50;

/** The shared memory of a {@link SharedMemoryCommunicator} group: made once by the parent, posted to every worker. */
export interface SharedCommunicatorMemory {
  readonly size: number;
  /** Largest all-reduce length and largest all-gather message (entries) a rank may contribute. */
  readonly capacity: number;
  readonly buffer: SharedArrayBuffer;
}

/**
 * Allocates the shared memory of a group of `size` ranks whose contributions hold at most
 * `capacity` elements: control words, a (kind, length) header and a byte counter per rank, one
 * float32 and one int32 slot of `capacity` per rank, and a float32 result of `capacity`.
 */
export function allocateCommunicatorMemory(size: number, capacity: number): SharedCommunicatorMemory {
  if (!Number.isInteger(size) || size < 1) throw new CommunicatorError(`SharedMemoryCommunicator: size must be a positive integer, got ${size}`);
  if (!Number.isInteger(capacity) || capacity < 1) throw new CommunicatorError(`SharedMemoryCommunicator: capacity must be a positive integer, got ${capacity}`);
  const bytes = layout(size, capacity).total;
  return { size, capacity, buffer: new SharedArrayBuffer(bytes) };
}

function layout(size: number, capacity: number) {
  const control = 0;
  const headers = control + 4 * CONTROL_WORDS;
  const sent = align8(headers + 4 * 2 * size);
  const values = sent + 8 * size;
  const indices = values + 4 * size * capacity;
  const result = indices + 4 * size * capacity;
  return { control, headers, sent, values, indices, result, total: result + 4 * capacity };
}

function align8(n: number): number {
  return Math.ceil(n / 8) * 8;
}

/** Wakes every rank blocked in a barrier of this group and makes their collectives throw (called by the parent on a failure). */
export function abortCommunicatorMemory(memory: SharedCommunicatorMemory): void {
  const control = new Int32Array(memory.buffer, 0, CONTROL_WORDS);
  Atomics.store(control, ABORT, 1);
  Atomics.notify(control, GENERATION);
}

/**
 * One rank's end of a group of W threads sharing memory. Each collective: every rank writes its
 * contribution into its own slot, a barrier; for a sum, rank r then adds up elements
 * [⌊r·n/W⌋, ⌊(r+1)·n/W⌋) of all slots in rank order 0..W−1 into the shared result (float32, the same
 * per-element order as `InProcessCommunicator`, so the sum is bit-identical), a barrier, and each
 * rank copies the result; for an all-gather each rank copies every slot, then a barrier so no slot
 * is overwritten before all have read it. A barrier blocks the thread in `Atomics.wait` (workers
 * may block; the main thread never holds a rank). The methods are async for the `Communicator`
 * interface but complete before they return. Byte accounting as `InProcessCommunicator`'s: each rank
 * adds its payload to its own counter in the shared memory.
 */
export class SharedMemoryCommunicator implements Communicator {
  readonly size: number;
  readonly rank: number;
  private readonly capacity: number;
  private readonly control: Int32Array;
  private readonly headers: Int32Array;
  private readonly sent: Float64Array;
  private readonly values: Float32Array;
  private readonly indices: Int32Array;
  private readonly result: Float32Array;
  private completed = 0;

  constructor(memory: SharedCommunicatorMemory, rank: number) {
    const { size, capacity, buffer } = memory;
    if (!Number.isInteger(rank) || rank < 0 || rank >= size) throw new CommunicatorError(`rank ${rank} is not in [0, ${size})`);
    const at = layout(size, capacity);
    if (buffer.byteLength !== at.total) throw new CommunicatorError(`SharedMemoryCommunicator: the buffer has ${buffer.byteLength} bytes, ${size} ranks x ${capacity} need ${at.total}`);
    this.size = size;
    this.rank = rank;
    this.capacity = capacity;
    this.control = new Int32Array(buffer, at.control, CONTROL_WORDS);
    this.headers = new Int32Array(buffer, at.headers, 2 * size);
    this.sent = new Float64Array(buffer, at.sent, size);
    this.values = new Float32Array(buffer, at.values, size * capacity);
    this.indices = new Int32Array(buffer, at.indices, size * capacity);
    this.result = new Float32Array(buffer, at.result, capacity);
  }

  async allReduceSum(rank: number, data: Float32Array): Promise<Float32Array> {
    this.checkRank(rank);
    const n = data.length;
    if (n > this.capacity) throw new CommunicatorError(`allReduceSum: rank ${rank} sent ${n} values, the shared buffer holds ${this.capacity}`);
    this.values.set(data, rank * this.capacity);
    this.publish(KIND_ALL_REDUCE, n, data.byteLength);
    this.barrier();
    this.checkHeaders();
    const lo = Math.floor((rank * n) / this.size);
    const hi = Math.floor(((rank + 1) * n) / this.size);
    const sum = this.result;
    for (let i = lo; i < hi; i++) sum[i] = 0;
    for (let q = 0; q < this.size; q++) {
      const base = q * this.capacity;
      for (let i = lo; i < hi; i++) sum[i] = sum[i]! + this.values[base + i]!;
    }
    this.barrier();
    this.completed++;
    return sum.slice(0, n);
  }

  async allGather(rank: number, message: SparseMessage): Promise<readonly SparseMessage[]> {
    this.checkRank(rank);
    const n = message.indices.length;
    if (n !== message.values.length) throw new CommunicatorError(`allGather: rank ${rank} sent ${n} indices and ${message.values.length} values`);
    if (n > this.capacity) throw new CommunicatorError(`allGather: rank ${rank} sent ${n} entries, the shared buffer holds ${this.capacity}`);
    this.indices.set(message.indices, rank * this.capacity);
    this.values.set(message.values, rank * this.capacity);
    this.publish(KIND_ALL_GATHER, n, sparseMessageBytes(message));
    this.barrier();
    this.checkHeaders();
    const messages: SparseMessage[] = [];
    for (let q = 0; q < this.size; q++) {
      const base = q * this.capacity;
      const length = this.headers[2 * q + 1]!;
      messages.push({ indices: this.indices.slice(base, base + length), values: this.values.slice(base, base + length) });
    }
    this.barrier();
    this.completed++;
    return messages;
  }

  stats(): TrafficStats {
    return { bytesSent: Array.from(this.sent), collectives: this.completed };
  }

  private checkRank(rank: number): void {
    if (rank !== this.rank) throw new CommunicatorError(`this SharedMemoryCommunicator is rank ${this.rank}'s, called as rank ${rank}`);
  }

  private publish(kind: number, length: number, bytes: number): void {
    this.headers[2 * this.rank] = kind;
    this.headers[2 * this.rank + 1] = length;
    this.sent[this.rank] = this.sent[this.rank]! + bytes;
  }

  /** Every rank throws the same error when the ranks called different collectives or all-reduce lengths. */
  private checkHeaders(): void {
    const kind = this.headers[0]!;
    const length = this.headers[1]!;
    for (let q = 1; q < this.size; q++) {
      const k = this.headers[2 * q]!;
      if (k !== kind || (kind === KIND_ALL_REDUCE && this.headers[2 * q + 1] !== length)) {
        throw new CommunicatorError(`collective ${this.completed}: rank ${q} called ${describe(k, this.headers[2 * q + 1]!)} while rank 0 called ${describe(kind, length)}`);
      }
    }
  }

  /** Sense-reversing barrier: the last rank to arrive resets the count and bumps the generation. */
  private barrier(): void {
    const control = this.control;
    const generation = Atomics.load(control, GENERATION);
    if (Atomics.add(control, ARRIVED, 1) === this.size - 1) {
      Atomics.store(control, ARRIVED, 0);
      Atomics.add(control, GENERATION, 1);
      Atomics.notify(control, GENERATION);
    } else {
      while (Atomics.load(control, GENERATION) === generation) {
        if (Atomics.load(control, ABORT) !== 0) break;
        Atomics.wait(control, GENERATION, generation, ABORT_POLL_MS);
      }
    }
    if (Atomics.load(control, ABORT) !== 0) throw new CommunicatorError(`rank ${this.rank}: the collective was aborted (another worker failed)`);
  }
}

function describe(kind: number, length: number): string {
  return kind === KIND_ALL_REDUCE ? `allReduceSum of ${length} values` : `allGather of ${length} entries`;
}
