import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';

import { FileLimitError, makeDirs, makeParentDirs, readFileLimited, readTextLimited } from './files.ts';

describe('makeDirs', () => {
  const root = mkdtempSync(join(tmpdir(), 'lowbit-files-'));
  after(() => rmSync(root, { recursive: true, force: true }));

  it('creates every missing level and is a no-op on an existing directory', () => {
    const deep = join(root, 'a', 'b', 'c');
    makeDirs(deep);
    assert.ok(statSync(deep).isDirectory());
    makeDirs(deep);
    makeDirs(root);
    makeParentDirs(join(root, 'p', 'q', 'file.json'));
    assert.ok(statSync(join(root, 'p', 'q')).isDirectory());
    assert.ok(!existsSync(join(root, 'p', 'q', 'file.json')));
  });

  it('throws a clear error when a level is a regular file', () => {
    const file = join(root, 'plain');
    writeFileSync(file, 'x');
    assert.throws(() => makeDirs(join(file, 'sub', 'dir')), /cannot create directory .*plain' exists and is not a directory/);
  });

  it('throws instead of spinning under a dangling symlink', () => {
    const link = join(root, 'dangling');
    symlinkSync(join(root, 'no-such-target'), link);
    assert.throws(() => makeDirs(join(link, 'out')), /cannot create directory/);
  });

  it('throws instead of spinning under /proc, where mkdir answers ENOENT', { skip: !existsSync('/proc/self') }, () => {
    assert.throws(() => makeDirs('/proc/lowbit-no-such-dir/out'), /cannot create directory '\/proc\/lowbit-no-such-dir\/out'/);
  });
});

describe('readFileLimited', () => {
  const root = mkdtempSync(join(tmpdir(), 'lowbit-read-'));
  after(() => rmSync(root, { recursive: true, force: true }));
  const refused = (code: string, pattern: RegExp) => (e: unknown) => e instanceof FileLimitError && e.code === code && pattern.test(e.message);

  it('reads a regular file whole, up to the limit', () => {
    const file = join(root, 'data.bin');
    const bytes = Uint8Array.from({ length: 1000 }, (_, i) => (i * 7) & 255);
    writeFileSync(file, bytes);
    assert.deepEqual(readFileLimited(file, 1000), bytes);
    assert.throws(() => readFileLimited(file, 999), refused('too-large', /^1000 bytes exceeds the limit of 999$/));
    writeFileSync(join(root, 'text.json'), '{"a": "é"}');
    assert.equal(readTextLimited(join(root, 'text.json')), '{"a": "é"}');
  });

  it('refuses directories and devices without reading them, and names the file in text reads', () => {
    assert.throws(() => readFileLimited(root, 1 << 20), refused('not-a-file', /directory/));
    if (existsSync('/dev/zero')) {
      assert.throws(() => readFileLimited('/dev/zero', 1 << 20), refused('not-a-file', /not a regular file/));
      assert.throws(() => readTextLimited('/dev/zero'), refused('not-a-file', /^\/dev\/zero: not a regular file/));
    }
    assert.throws(() => readFileLimited(join(root, 'missing'), 10), /ENOENT/);
  });

  it('refuses a FIFO before opening it (opening would wait for a writer)', (t) => {
    const fifo = join(root, 'fifo');
    if (spawnSync('mkfifo', [fifo]).status !== 0) return t.skip('mkfifo is not available');
    assert.throws(() => readFileLimited(fifo, 1 << 20), refused('not-a-file', /FIFO/));
  });
});
