/**
 * Runs `lowbit` CLI commands in-process for the language-model table benches (cli-table.ts,
 * irnn-table.ts): echoes the command and its printed lines, returns stdout, throws on a non-zero
 * exit; `number` reads one figure (thousands separators allowed) out of a command's output.
 */
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
