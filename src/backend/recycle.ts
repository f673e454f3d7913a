/**
 * Reuse of float32 buffers that are provably dead, while they are still in cache.
 *
 * A training step allocates megabytes of activations and gradients, and V8 only frees an
 * ArrayBuffer when a scavenge finds its wrapper dead -- every few steps. Until then every new
 * output is memory last touched several steps ago: its first write misses every cache level
 * (about 40 µs per 0.4 MB here, more than the kernel writing it). Backpropagation knows better:
 * once a non-leaf tensor's gradient has been consumed by its node's rule, nothing can see that
 * gradient again -- if its buffer was allocated during this backward pass and no gradient still
 * held shares it (`autograd/engine.ts` checks both). Those buffers come here, and kernel outputs
 * that are overwritten completely take them back first (`takeRecycled`).
 *
 * No-grad forwards hand back their intermediates too (`releaseIntermediates`): there a large
 * fresh buffer costs its page faults (zeroed pages on first write, about 0.2 ms per MB), so the
 * bound is wide enough for a batch-256 MobileNet's activations.
 *
 * Bounded (a few buffers per size, 128 MB in all); only whole buffers of at least 16 KB.
 * `setRecyclePoison(true)` fills every returned buffer with NaN, so a use after release shows up
 * in any test as a wrong gradient.
 */

const MIN_ELEMENTS = 4096;
const PER_SIZE = 4;
const MAX_BYTES = 128 << 20;

const free = new Map<number, Float32Array[]>();
let pooledBytes = 0;
let poison = false;
let enabled = true;
let tracking = 0;
let fresh = new WeakSet<ArrayBufferLike>();
/** Buffers in the pool now (a buffer is never pooled twice). */
const pooled = new WeakSet<ArrayBufferLike>();
/** Whole kernel output buffers (any pass) not handed back yet: the only ones `releaseOutput` takes. */
const outputs = new WeakSet<ArrayBufferLike>();

/** Poison returned buffers with NaN (tests); returns the previous setting. */
export function setRecyclePoison(on: boolean): boolean {
  const previous = poison;
  poison = on;
  return previous;
}

/** Turns recycling on (the default) or off; off also empties the pool. Returns the previous setting. */
export function setRecycling(on: boolean): boolean {
  const previous = enabled;
  enabled = on;
  if (!on) {
    for (const list of free.values()) for (const data of list) pooled.delete(data.buffer);
    free.clear();
    pooledBytes = 0;
  }
  return previous;
}

/**
 * Runs `fn` while recording which buffers kernels allocate (`noteAllocated`): only those may be
 * released by `recycle` afterwards. Nested calls share one record.
 */
export function trackAllocations<T>(fn: () => T): T {
  if (tracking === 0) fresh = new WeakSet();
  tracking++;
  try {
    return fn();
  } finally {
    tracking--;
  }
}

/** Called by kernels for each output buffer they allocate. */
export function noteAllocated(data: Float32Array): void {
  if (data.length < MIN_ELEMENTS) return;
  outputs.add(data.buffer);
  if (tracking > 0) fresh.add(data.buffer);
}

/**
 * Hands back the buffer of a kernel output that its owner will not read again and that no other
 * live tensor shares (the caller's promise: no-grad inference, where nothing records the graph).
 * Declines (returns false) anything else it can check: views, small or foreign buffers, buffers
 * already handed back. Returns whether the buffer went to the pool.
 */
export function releaseOutput(data: unknown): boolean {
  if (!(data instanceof Float32Array) || data.length < MIN_ELEMENTS || data.byteOffset !== 0 ||
    data.byteLength !== data.buffer.byteLength || !outputs.has(data.buffer)) return false;
  outputs.delete(data.buffer);
  if (!enabled || pooled.has(data.buffer)) return false;
  const before = pooledBytes;
  recycle(data);
  return pooledBytes !== before;
}

/** Whether `data` is a whole buffer allocated inside the current `trackAllocations`. */
export function isFreshWhole(data: unknown): data is Float32Array {
  return data instanceof Float32Array && data.length >= MIN_ELEMENTS && data.byteOffset === 0 &&
    data.byteLength === data.buffer.byteLength && fresh.has(data.buffer);
}

/** Hands a dead buffer (checked by the caller: `isFreshWhole` and unreferenced) back for reuse. */
export function recycle(data: Float32Array): void {
  if (!enabled || pooled.has(data.buffer)) return;
  const list = free.get(data.length) ?? [];
  if (list.length >= PER_SIZE || pooledBytes + data.byteLength > MAX_BYTES) return;
  fresh.delete(data.buffer);
  outputs.delete(data.buffer);
  pooled.add(data.buffer);
  list.push(data);
  free.set(data.length, list);
  pooledBytes += data.byteLength;
}

/** A released buffer of exactly `size` elements (contents undefined), or undefined. */
export function takeRecycled(size: number): Float32Array | undefined {
  const list = free.get(size);
  const data = list?.pop();
  if (!data) return undefined;
  pooled.delete(data.buffer);
  pooledBytes -= data.byteLength;
  if (poison) data.fill(NaN);
  return data;
}
