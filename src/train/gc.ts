/**
 * Garbage-collector policy for batch training processes.
 */
import { setFlagsFromString } from 'node:v8';

let applied = false;

/**
 * Switches V8 to non-incremental major garbage collection for the rest of the process, the
 * policy of a throughput job such as `lowbit train`. Idempotent; call it before training.
 *
 * Why: a training step allocates about 11 MB (fp32 LeNet-5, batch 64; ~13 MB with W4A4 QAT) of
 * short-lived ArrayBuffers on a JS heap of about 8 MB. V8 counts ArrayBuffer bytes allocated
 * since the last mark-compact against the old generation's growth allowance (~15 MB for so
 * small a heap), so with incremental marking it keeps starting marking cycles that find nothing
 * old to free: measured on the default QAT job 0.26 mark-compacts per step (0.02–0.06 for
 * fp32), each about 13 ms of CPU. Without incremental marking a major GC runs only when the old generation
 * or the external memory really grows (measured: < 0.01 per step for both), and scavenges still
 * free the short-lived buffers. Pauses are longer when a major GC does run, which a batch job
 * does not mind; a latency-sensitive process (a server) should not call this.
 */
export function preferThroughputGc(): void {
  if (applied) return;
  setFlagsFromString('--no-incremental-marking');
  applied = true;
}
