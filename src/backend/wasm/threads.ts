/**
 * The wasm backend's worker pool: every worker instantiates the backend's modules on the one
 * shared WebAssembly.Memory, and a kernel hands each worker a list of calls (export index and i32
 * arguments) written into a control SharedArrayBuffer, wakes it with Atomics.notify, runs its own
 * part on the calling thread, then waits for the workers (Atomics.wait on Node.js and in a worker,
 * a spin on Atomics.load on a browser's main thread, where waiting is not allowed). Kernel calls stay
 * synchronous; only the workers' start is asynchronous: a worker takes parts once it reported ready,
 * until then the caller runs everything.
 *
 * Control words, per worker slot (SLOT_WORDS Int32 each): SEQ (job number, written last by the
 * caller; −1 asks the worker to exit), DONE (the job number the worker finished), STATUS (0, or 1
 * when a call threw), READY (1 once instantiated), COUNT (calls in the job), then the calls as
 * [export index, argument count, arguments...].
 * @internal
 */
import { callerCanBlock, hostCores, spawnWorker, threadsFromEnvironment, threadsUnavailableReason, type HostWorker } from './host.ts';

const SEQ = 0, DONE = 1, STATUS = 2, READY = 3, COUNT = 4, CALLS = 5;
/** Words per worker slot: up to about 5,000 calls of 9 arguments (a kernel whose lists do not fit runs on one thread). */
const SLOT_WORDS = 1 << 16;
/** Most threads (caller included) the pool runs. */
export const MAX_THREADS = 16;

/** The worker's script: plain JavaScript, the same text for worker_threads (eval) and a Blob URL. */
const WORKER_SOURCE = `
function startWorker(init) {
  const exports = {};
  for (const module of init.modules) Object.assign(exports, new WebAssembly.Instance(module, { env: { memory: init.memory } }).exports);
  const fns = init.names.map((name) => exports[name]);
  const ctrl = new Int32Array(init.control);
  const base = init.base;
  const args = [];
  Atomics.store(ctrl, base + ${READY}, 1);
  let seen = 0;
  for (;;) {
    Atomics.wait(ctrl, base + ${SEQ}, seen);
    const seq = Atomics.load(ctrl, base + ${SEQ});
    if (seq === seen) continue;
    if (seq < 0) return;
    seen = seq;
    let status = 0;
    try {
      const count = ctrl[base + ${COUNT}];
      let at = base + ${CALLS};
      for (let i = 0; i < count; i++) {
        const fn = fns[ctrl[at]];
        const argc = ctrl[at + 1];
        args.length = argc;
        for (let j = 0; j < argc; j++) args[j] = ctrl[at + 2 + j];
        fn(...args);
        at += 2 + argc;
      }
    } catch (e) {
      status = 1;
    }
    Atomics.store(ctrl, base + ${STATUS}, status);
    Atomics.store(ctrl, base + ${DONE}, seq);
    Atomics.notify(ctrl, base + ${DONE});
  }
}
`;

/** Records the calls of one part: `call(export, ...args)`. */
export type CallSink = (fn: number, ...args: number[]) => void;

/** Thrown by a recording sink when a part's list passes its slot (the kernel then runs on one thread). */
class SlotOverflow extends Error {}

/** What the pool needs of the runtime: the memory, the compiled modules and the exports by index. */
export interface PoolTarget {
  readonly memory: object;
  readonly modules: readonly object[];
  readonly names: readonly string[];
  readonly fns: readonly ((...args: number[]) => unknown)[];
}

/** The thread count asked for: setWasmThreads, else LOWBIT_THREADS, else min(cores, 4). */
export function defaultThreadCount(): number {
  return Math.max(1, Math.min(MAX_THREADS, threadsFromEnvironment() ?? Math.min(hostCores(), 4)));
}

export class WasmPool {
  private readonly control: SharedArrayBuffer;
  private readonly ctrl: Int32Array;
  private workers: HostWorker[] = [];
  private seq = 0;
  private spawned = false;
  /** The first error a worker reported (it then takes no parts), or null. */
  error: string | null = null;
  /** Kernel calls that ran parts on workers (tests check that a threaded path really ran). */
  dispatched = 0;
  /**
   * Longest wait (ms) for a worker's part of one kernel call. A worker that died (killed, out of
   * memory) never answers: past this limit the call throws instead of hanging, and the pool stops
   * its workers, so every later call runs on the calling thread.
   */
  waitLimitMs = 120_000;

  constructor(private readonly target: PoolTarget, readonly threads: number) {
    this.limit = threads;
    this.control = new SharedArrayBuffer(4 * SLOT_WORDS * Math.max(1, threads - 1));
    this.ctrl = new Int32Array(this.control);
  }

  /** Starts the workers (once, without waiting for them: kernels use each one once it is ready). */
  spawn(): void {
    if (this.spawned) return;
    this.spawned = true;
    for (let w = 0; w < this.threads - 1; w++) {
      this.workers.push(spawnWorker(WORKER_SOURCE, {
        modules: this.target.modules, memory: this.target.memory, names: this.target.names, control: this.control, base: w * SLOT_WORDS,
      }, (message) => {
        this.error ??= `wasm worker ${w + 1}: ${message}`;
      }));
    }
  }

  /** Starts the workers and resolves when every one reported ready, one failed, or `timeoutMs` passed. */
  ready(timeoutMs = 20000): Promise<void> {
    this.spawn();
    const t0 = Date.now();
    return new Promise<void>((resolve) => {
      const poll = () => {
        if (this.readyWorkers() === this.threads - 1 || this.error !== null || Date.now() - t0 > timeoutMs) resolve();
        else setTimeout(poll, 2);
      };
      poll();
    });
  }

  /** Workers that reported ready, counted from the first (a worker is used only when all before it are). */
  readyWorkers(): number {
    let n = 0;
    while (n < this.workers.length && Atomics.load(this.ctrl, n * SLOT_WORDS + READY) === 1) n++;
    return n;
  }

  /** Most threads kernels may use (setWasmThreads lowers it without stopping workers). */
  limit: number;

  /** Threads a kernel may split over now: the caller plus the ready workers, at most `limit`. */
  available(): number {
    return Math.min(this.limit, 1 + this.readyWorkers());
  }

  /**
   * Runs `parts` parts of a kernel: part p's calls are recorded by `build(p, sink)`; parts 1.. go to
   * workers, part 0 runs on the caller. Every part must write outputs no other part touches. With
   * fewer threads available, or when a list does not fit its slot, all parts run on the caller in order.
   */
  run(parts: number, build: (part: number, call: CallSink) => void): void {
    const fns = this.target.fns;
    const direct: CallSink = (fn, ...args) => void fns[fn]!(...args);
    const workers = Math.min(parts, this.available()) - 1;
    if (parts <= 1 || workers < parts - 1) {
      for (let p = 0; p < parts; p++) build(p, direct);
      return;
    }
    const ctrl = this.ctrl;
    try {
      for (let p = 1; p < parts; p++) {
        const base = (p - 1) * SLOT_WORDS;
        let at = base + CALLS;
        let count = 0;
        build(p, (fn, ...args) => {
          if (at + 2 + args.length > base + SLOT_WORDS) throw new SlotOverflow();
          ctrl[at] = fn;
          ctrl[at + 1] = args.length;
          for (let j = 0; j < args.length; j++) ctrl[at + 2 + j] = args[j]!;
          at += 2 + args.length;
          count++;
        });
        ctrl[base + COUNT] = count;
      }
    } catch (e) {
      if (!(e instanceof SlotOverflow)) throw e;
      for (let p = 0; p < parts; p++) build(p, direct);
      return;
    }
    // job numbers run 1 .. 2^31 − 1 and wrap (a negative one would ask the workers to exit)
    const seq = (this.seq = (this.seq % 0x7fffffff) + 1);
    this.dispatched++;
    for (let p = 1; p < parts; p++) {
      const base = (p - 1) * SLOT_WORDS;
      Atomics.store(ctrl, base + SEQ, seq);
      Atomics.notify(ctrl, base + SEQ);
    }
    let failure: unknown = null;
    try {
      build(0, direct);
    } catch (e) {
      failure = e;
    }
    let failed = 0;
    const deadline = Date.now() + this.waitLimitMs;
    for (let p = 1; p < parts; p++) {
      const at = (p - 1) * SLOT_WORDS + DONE;
      if (callerCanBlock) {
        for (let done = Atomics.load(ctrl, at); done !== seq; done = Atomics.load(ctrl, at)) {
          const left = deadline - Date.now();
          if (left <= 0) this.abandon(p);
          Atomics.wait(ctrl, at, done, left);
        }
      } else {
        for (let spins = 1; Atomics.load(ctrl, at) !== seq; spins++) if ((spins & 0xfff) === 0 && Date.now() > deadline) this.abandon(p);
      }
      if (Atomics.load(ctrl, (p - 1) * SLOT_WORDS + STATUS) !== 0) failed = p;
    }
    if (failure !== null) throw failure;
    if (failed) throw new Error(`wasm worker ${failed} failed a kernel call`);
  }

  /** A worker that did not answer within waitLimitMs: stop every worker, remember why, throw. */
  private abandon(part: number): never {
    const message = `wasm worker ${part} did not finish its part of a kernel call within ${this.waitLimitMs / 1000} s (it may have died); kernels now run on the calling thread only`;
    this.error ??= message;
    this.close();
    throw new Error(message);
  }

  /** @internal Kills worker `w` without telling it (tests: a worker that died). */
  killWorkerForTests(w: number): void {
    this.workers[w]?.terminate();
  }

  /** Asks the workers to exit and forgets them. */
  close(): void {
    for (let w = 0; w < this.workers.length; w++) {
      Atomics.store(this.ctrl, w * SLOT_WORDS + SEQ, -1);
      Atomics.notify(this.ctrl, w * SLOT_WORDS + SEQ);
      this.workers[w]!.terminate();
    }
    this.workers = [];
  }
}

export { threadsUnavailableReason };
