/**
 * Every `lowbit <command> --flag` written in README.md and docs/*.md (in shell blocks and inline
 * code alike) names an option that command has, and a literal value given to an enum option is
 * one of its choices. A renamed flag or model name then fails here instead of in a user's shell.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { commands } from '../src/cli/commands/index.ts';
import type { Command } from '../src/cli/command.ts';
import { parseOptions } from '../src/cli/args.ts';

const root = resolve(import.meta.dirname, '..');
const files = ['README.md', ...readdirSync(join(root, 'docs')).filter((f) => f.endsWith('.md')).map((f) => join('docs', f))];

const flagName = (key: string): string => key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

/** Problems with the `lowbit ...` invocations in one markdown text; also counts the flags seen. */
export function checkInvocations(file: string, markdown: string, known: Readonly<Record<string, Command>>): { problems: string[]; flags: number } {
  const problems: string[] = [];
  let flags = 0;
  markdown.split('\n').forEach((line, i) => {
    // `lowbit <cmd>` and its arguments up to the end of the command (pipe, &&, ;, comment, backtick).
    for (const m of line.matchAll(/\blowbit\s+([a-z]+)((?:\s+(?!\||&&|;|#)[^\s`|;)]+)*)/g)) {
      const command = known[m[1]!];
      if (!command) continue;
      const specs = new Map(Object.entries(command.options).map(([key, spec]) => [flagName(key), spec]));
      const tokens = m[2]!.trim().split(/\s+/).filter(Boolean);
      tokens.forEach((token, j) => {
        if (!token.startsWith('--')) return;
        const eq = token.indexOf('=');
        const name = token.slice(2, eq < 0 ? undefined : eq);
        if (name === 'help') return;
        flags++;
        const spec = specs.get(name) ?? (name.startsWith('no-') && specs.get(name.slice(3))?.type === 'boolean' ? specs.get(name.slice(3)) : undefined);
        const where = `${file}:${i + 1}`;
        if (!spec) {
          problems.push(`${where}: 'lowbit ${m[1]}' has no option --${name}`);
          return;
        }
        const value = eq >= 0 ? token.slice(eq + 1) : tokens[j + 1];
        // Only literal values: placeholders (FILE, <dir>, a|b, ...) are prose, not choices.
        if (spec.type === 'enum' && value !== undefined && /^[a-z0-9][a-z0-9.-]*$/.test(value) && !value.endsWith('.') && !spec.choices.includes(value)) {
          problems.push(`${where}: 'lowbit ${m[1]} --${name} ${value}': not one of ${spec.choices.join(', ')}`);
        }
      });
    }
  });
  return { problems, flags };
}

test('checkInvocations reports an unknown flag and a wrong enum value with their lines', () => {
  const md = ['```sh', 'npx lowbit train --epochs 2 --no-such-flag 3', '```', 'Use `lowbit train --model lenet9` or `lowbit info --help`.'].join('\n');
  const { problems, flags } = checkInvocations('a.md', md, commands);
  assert.equal(flags, 3);
  assert.deepEqual(problems.map((p) => p.split(':').slice(0, 2).join(':')), ['a.md:2', 'a.md:4']);
  assert.match(problems[0]!, /--no-such-flag/);
  assert.match(problems[1]!, /--model lenet9.*lenet5/);
});

test('every lowbit invocation in README.md and docs/*.md uses real options and choices', () => {
  let flags = 0;
  const problems: string[] = [];
  for (const f of files) {
    const r = checkInvocations(f, readFileSync(join(root, f), 'utf8'), commands);
    flags += r.flags;
    problems.push(...r.problems);
  }
  assert.ok(flags > 300, `only ${flags} flags found: the pattern no longer matches the docs`);
  assert.deepEqual(problems, [], problems.join('\n'));
});

/** Shell-like split of one example line: quotes group words, `#` starts a comment. */
function shellWords(line: string): string[] {
  const words: string[] = [];
  for (const m of line.replace(/\s+#.*$/, '').matchAll(/"([^"]*)"|'([^']*)'|(\S+)/g)) words.push(m[1] ?? m[2] ?? m[3]!);
  return words;
}

test("every command's --help examples parse with that command's options", () => {
  let examples = 0;
  for (const [name, command] of Object.entries(commands)) {
    // An example may chain commands with &&: each part is checked.
    for (const example of (command.examples ?? []).flatMap((e) => e.replace(/\s+#.*$/, '').split(/\s+&&\s+/))) {
      const words = shellWords(example);
      // (A chained step may run another command, e.g. the float training before `lowbit vertical`.)
      const target = commands[words[1]!];
      assert.ok(words[0] === 'lowbit' && target, `${name}: example '${example}' is not a lowbit command`);
      assert.doesNotThrow(() => parseOptions(target.options, words.slice(2), words[1]), `${name}: example '${example}'`);
      examples++;
    }
  }
  assert.ok(examples >= 20, `only ${examples} examples`);
});
