/** The benchmark sections, in the order `npm run bench` runs them and BENCHMARKS.md lists them. */
import type { Section, SectionResult } from '../lib.ts';
import { decode } from './decode.ts';
import { epochTime } from './epoch-time.ts';
import { inference } from './inference.ts';
import { intInference } from './int-inference.ts';
import { intKernels } from './int-kernels.ts';
import { qatEpoch } from './qat-epoch.ts';
import { rnn } from './rnn.ts';
import { seqInference } from './seq-inference.ts';
import { renderSgemm, sgemm } from './sgemm.ts';
import { trainThroughput } from './train-throughput.ts';

export const SECTIONS: readonly Section[] = [sgemm, trainThroughput, inference, epochTime, qatEpoch, intKernels, intInference, rnn, seqInference, decode];

/** Sections whose table is not the generic measurement table. */
export const RENDERERS: Readonly<Record<string, (r: SectionResult) => string[]>> = {
  sgemm: renderSgemm,
};
