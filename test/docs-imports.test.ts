/**
 * Code snippets in the user docs import from the public entry ('lowbit', i.e. src/index.ts), never
 * from source paths, and every name they import (or destructure from a namespace of it) exists there.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as lowbit from '../src/index.ts';

const files = ['README.md', ...readdirSync('docs').filter((f) => f.endsWith('.md')).map((f) => join('docs', f))];

/** The ```ts / ```js blocks of a markdown file. */
function codeBlocks(markdown: string): string[] {
  return [...markdown.matchAll(/```(?:ts|typescript|js|javascript)\n([\s\S]*?)```/g)].map((m) => m[1]!);
}

test('doc snippets import only from lowbit, and the names exist on the public entry', () => {
  let imports = 0;
  for (const file of files) {
    for (const block of codeBlocks(readFileSync(file, 'utf8'))) {
      for (const m of block.matchAll(/^import\s+\{([^}]*)\}\s+from\s+'([^']+)'/gm)) {
        const source = m[2]!;
        if (source.startsWith('node:')) continue;
        assert.equal(source, 'lowbit', `${file}: import from '${source}' (use the public entry 'lowbit')`);
        const entries = m[1]!.split(',').map((n) => n.trim()).filter(Boolean);
        // Type-only names vanish at run time; the value names are checked.
        for (const name of entries.filter((n) => !n.startsWith('type ')).map((n) => n.split(/\s+as\s+/)[0]!)) {
          assert.ok(name in lowbit, `${file}: 'lowbit' has no export '${name}'`);
          imports++;
        }
      }
      for (const m of block.matchAll(/const\s+\{([^}]*)\}\s*=\s*([a-z]\w*)\.(\w+);/g)) {
        // Only destructuring from one of lowbit's namespaces (quant.ptq, runtime...), not from local values.
        if (!(m[2]! in lowbit)) continue;
        const ns = (lowbit as Record<string, unknown>)[m[2]!] as Record<string, Record<string, unknown>>;
        const inner = ns[m[3]!];
        assert.ok(inner, `${file}: ${m[2]}.${m[3]} is not on the public entry`);
        for (const name of m[1]!.split(',').map((n) => n.trim().split(':')[0]!.trim()).filter(Boolean)) assert.ok(name in inner, `${file}: ${m[2]}.${m[3]} has no '${name}'`);
      }
    }
  }
  assert.ok(imports > 10, 'the docs import from lowbit');
});
