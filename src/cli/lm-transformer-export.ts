/**
 * `lowbit export RUN` for a transformer-lm run.
 */
import { UsageError } from './args.ts';
import type { CommandIO } from './command.ts';
import type { LmCheckpoint } from './lm-run.ts';
import type { LmExportOptions } from './commands/export-lm.ts';
import type { TransformerLM } from '../nn/models/transformer-lm.ts';

/** Writes the run's TransformerLM as ONNX (not yet: refused). */
export async function exportTransformerLanguageModel(run: LmCheckpoint, _model: TransformerLM, _out: string, _options: LmExportOptions, _io: CommandIO): Promise<number> {
  throw new UsageError(`ONNX export of transformer-lm runs is not implemented ('${run.checkpoint}')`, 'export');
}
