/**
 * Runs `lowbit` CLI commands in-process for the language-model table benches (cli-table.ts,
 * irnn-table.ts, gru-sotu-table.ts, transformer-table.ts): echoes the command and its printed
 * lines, returns stdout, throws on a non-zero exit; `number` reads one figure (thousands
 * separators allowed) out of a command's output; `evalFigures` and `exportFigures` run
 * `lowbit eval RUN` and `lowbit export RUN --verify` and read the table's figures off them.
 */
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { main } from '../../src/cli/main.ts';

export async function lowbit(args: string[]): Promise<string> {
  let stdout = '';
  const io = {
    stdout: new Writable({ write(chunk, _enc, done) { stdout += String(chunk); done(); } }),
    stderr: process.stderr,
    print: (line = '') => { stdout += `${line}\n`; console.log(line); },
  };
  console.log(`$ lowbit ${args.join(' ')}`);
  const code = await main(args, io);
  if (code !== 0) throw new Error(`lowbit ${args.join(' ')} exited with ${code}`);
  return stdout;
}

export function number(text: string, pattern: RegExp, what: string): number {
  const m = pattern.exec(text);
  if (!m) throw new Error(`no ${what} in:\n${text}`);
  return Number(m[1]!.replace(/,/g, ''));
}

/** `lowbit eval RUN`: test perplexity, next-word accuracy (a fraction) and predicted words/s. */
export async function evalFigures(run: string): Promise<{ testPerplexity: number; testAccuracy: number; predictedWordsPerSecond: number }> {
  const evalText = await lowbit(['eval', run]);
  return {
    testPerplexity: number(evalText, /test perplexity +([\d.]+)/, 'test perplexity'),
    testAccuracy: number(evalText, /next-word accuracy ([\d.]+) %/, 'accuracy') / 100,
    predictedWordsPerSecond: number(evalText, /throughput +(\d+) predicted words\/s/, 'throughput'),
  };
}

/**
 * `lowbit export RUN --out RUN/model.onnx --verify --samples 2000`: the file's size and the
 * onnxruntime-node comparison (both perplexities, argmax agreement as a fraction); `text` is the
 * command's output for further figures.
 */
export async function exportFigures(run: string): Promise<{ text: string; figures: { onnxBytes: number; ortPerplexity: number; lowbitPerplexity2000: number; argmaxAgreement: number } }> {
  const onnx = join(run, 'model.onnx');
  const text = await lowbit(['export', run, '--out', onnx, '--verify', '--samples', '2000']);
  return {
    text,
    figures: {
      onnxBytes: statSync(onnx).size,
      ortPerplexity: number(text, /onnxruntime ([\d.]+), lowbit/, 'ORT perplexity'),
      lowbitPerplexity2000: number(text, /, lowbit ([\d.]+) \(ratio/, 'lowbit perplexity'),
      argmaxAgreement: number(text, /argmax +([\d.]+) %/, 'agreement') / 100,
    },
  };
}

/**
 * The figures of an integer (iRNN) next-word file from the output of `lowbit export --format irnn
 * --verify --samples 2000` (file bytes, weight bits of the `cell`, both perplexities on 2,000 test
 * windows, argmax agreement as a fraction) and of `lowbit eval FILE` (test perplexity, accuracy as
 * a fraction, predicted words/s, model bytes).
 */
export function irnnFileFigures(exportText: string, evalText: string, cell: 'GRU' | 'LSTM'): {
  fileBytes: number; weightBits: number; integerPerplexity2000: number; lowbitPerplexity2000: number; argmaxAgreement2000: number;
  integerTestPerplexity: number; integerTestAccuracy: number; integerWordsPerSecond: number; modelBytes: number;
} {
  return {
    fileBytes: number(exportText, /wrote \S+ \(([\d,]+) bytes/, 'file bytes'),
    weightBits: number(exportText, new RegExp(`${cell} with (\\d+)-bit`), 'weight bits'),
    integerPerplexity2000: number(exportText, /perplexity +integer ([\d.]+)/, 'integer perplexity'),
    lowbitPerplexity2000: number(exportText, /, lowbit ([\d.]+) \(ratio/, 'lowbit perplexity'),
    argmaxAgreement2000: number(exportText, /argmax +([\d.]+) %/, 'agreement') / 100,
    integerTestPerplexity: number(evalText, /test perplexity +([\d.]+)/, 'test perplexity'),
    integerTestAccuracy: number(evalText, /accuracy ([\d.]+) %/, 'accuracy') / 100,
    integerWordsPerSecond: number(evalText, /throughput +(\d+) predicted/, 'throughput'),
    modelBytes: number(evalText, /model bytes +([\d,]+)/, 'model bytes'),
  };
}
