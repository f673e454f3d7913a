/**
 * Every ```ts code block in README.md and docs/*.md type-checks against the public entry ('lowbit'
 * = src/index.ts) under the project's strict compiler options. A block that is a fragment (it uses
 * a `model` or `trainLoader` built earlier on the page) states what it assumes in an HTML comment
 * on the line right above its fence, which the rendered page hides:
 *
 *     <!-- context: import { nn } from 'lowbit'; declare const x: Tensor; -->
 *
 * The context is prepended to the block. So a renamed option, a wrong namespace or a changed
 * signature in the docs fails here instead of in a user's editor.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import ts from 'typescript';

const root = resolve(import.meta.dirname, '..');
const files = ['README.md', ...readdirSync(join(root, 'docs')).filter((f) => f.endsWith('.md')).map((f) => join('docs', f))];

export interface Snippet {
  /** Markdown file (relative to the repository root) and the 1-based line of the block's first code line. */
  file: string;
  line: number;
  context: string;
  code: string;
}

/** The ts/typescript blocks of a markdown file with the context comment above each (if any). */
export function snippetsOf(file: string, markdown: string): Snippet[] {
  const lines = markdown.split('\n');
  const out: Snippet[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (!/^```(ts|typescript)\s*$/.test(lines[i]!)) continue;
    const start = i + 1;
    let end = start;
    while (end < lines.length && !/^```\s*$/.test(lines[end]!)) end++;
    assert.ok(end < lines.length, `${file}:${i + 1}: code block never closed`);
    const above = i > 0 ? /^<!--\s*context:([\s\S]*?)-->\s*$/.exec(lines[i - 1]!) : null;
    out.push({ file, line: start + 1, context: above ? above[1]!.trim() : '', code: lines.slice(start, end).join('\n') });
    i = end;
  }
  return out;
}

test('snippetsOf reads blocks, their lines and context comments', () => {
  const md = ['# t', '<!-- context: declare const x: number; -->', '```ts', 'const y = x + 1;', '```', '', '```ts', 'let z = 2;', '```'].join('\n');
  const s = snippetsOf('a.md', md);
  assert.deepEqual(s, [
    { file: 'a.md', line: 4, context: 'declare const x: number;', code: 'const y = x + 1;' },
    { file: 'a.md', line: 8, context: '', code: 'let z = 2;' },
  ]);
});

/** Type-check snippets as separate modules; returns "file:line: message" per diagnostic. */
export function typecheckSnippets(snippets: readonly Snippet[]): string[] {
  const dir = join(root, '.docs-snippets');
  const sources = new Map<string, { text: string; snippet: Snippet; contextLines: number }>();
  snippets.forEach((s, i) => {
    const name = join(dir, `${String(i).padStart(3, '0')}.ts`);
    const context = s.context ? `${s.context}\n` : '';
    // `export {}` makes each block its own module, so two pages may both declare `model`.
    sources.set(name, { text: `${context}${s.code}\nexport {};\n`, snippet: s, contextLines: context ? context.split('\n').length - 1 : 0 });
  });
  const options: ts.CompilerOptions = {
    target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext,
    strict: true, noEmit: true, skipLibCheck: true, allowImportingTsExtensions: true, types: ['node'], lib: ['lib.es2022.d.ts'],
    typeRoots: [join(root, 'node_modules', '@types')], baseUrl: root, paths: { lowbit: ['./src/index.ts'] },
  };
  const host = ts.createCompilerHost(options);
  const read = host.readFile.bind(host);
  const exists = host.fileExists.bind(host);
  host.readFile = (f) => sources.get(resolve(f))?.text ?? read(f);
  host.fileExists = (f) => sources.has(resolve(f)) || exists(f);
  const getSource = host.getSourceFile.bind(host);
  host.getSourceFile = (f, lang, ...rest) => {
    const own = sources.get(resolve(f));
    return own ? ts.createSourceFile(f, own.text, lang, true) : getSource(f, lang, ...rest);
  };
  // The snippets sit in an (unwritten) directory of the repository: package.json "type": "module" applies.
  const program = ts.createProgram([...sources.keys()], options, host);
  const problems: string[] = [];
  for (const d of ts.getPreEmitDiagnostics(program)) {
    const message = ts.flattenDiagnosticMessageText(d.messageText, '\n');
    const own = d.file ? sources.get(resolve(d.file.fileName)) : undefined;
    if (!own || d.start === undefined) {
      problems.push(`${d.file?.fileName ?? '(global)'}: ${message}`);
      continue;
    }
    const { line } = d.file!.getLineAndCharacterOfPosition(d.start);
    const where = line < own.contextLines ? `${own.snippet.file}:${own.snippet.line - 2} (context comment)` : `${own.snippet.file}:${own.snippet.line + line - own.contextLines}`;
    problems.push(`${where}: ${message}`);
  }
  return problems;
}

// One compiler run (about 10 s) covers both: the docs, and two planted mistakes that prove the
// check reports errors and maps them back to their markdown lines.
test('every ts code block in README.md and docs/*.md type-checks against the public entry', () => {
  const snippets = files.flatMap((f) => snippetsOf(f, readFileSync(join(root, f), 'utf8')));
  assert.ok(snippets.length >= 40, `found only ${snippets.length} snippets`);
  const planted: Snippet[] = [
    { file: 'planted-x.md', line: 10, context: "import { quant } from 'lowbit';", code: 'quant.calibrateTypo();' },
    { file: 'planted-y.md', line: 3, context: '', code: "import { nn } from 'lowbit';\nconst m = nn.lenet5();\nm.forward(1);" },
  ];
  const problems = typecheckSnippets([...snippets, ...planted]);
  const plantedProblems = problems.filter((p) => p.startsWith('planted-'));
  assert.equal(plantedProblems.length, 2, plantedProblems.join('\n'));
  assert.match(plantedProblems[0]!, /^planted-x\.md:10: .*calibrateTypo/);
  assert.match(plantedProblems[1]!, /^planted-y\.md:5: .*number/);
  const docProblems = problems.filter((p) => !p.startsWith('planted-'));
  assert.deepEqual(docProblems, [], `doc snippets that do not type-check:\n${docProblems.join('\n')}`);
});
