import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';

// The backend module checks lowbit's environment variables when it is imported: a typo must be a
// clear error, not silently ignored. Each case imports it in a fresh process.
const backendUrl = new URL('./index.ts', import.meta.url).href;

function importWith(env: Record<string, string>): { status: number | null; stderr: string } {
  const run = spawnSync(process.execPath, [...process.execArgv, '--input-type=module', '-e', `await import(${JSON.stringify(backendUrl)});`], {
    env: { ...process.env, LOWBIT_BACKEND: '', LOWBIT_THREADS: '', LOWBIT_ISA: '', LOWBIT_AMX: '', ...env },
    encoding: 'utf8',
  });
  return { status: run.status, stderr: run.stderr };
}

describe('environment variables', () => {
  it('accepts valid values and empty ones', () => {
    const ok = importWith({ LOWBIT_THREADS: '1', LOWBIT_ISA: 'avx2', LOWBIT_AMX: '0', LOWBIT_BACKEND: 'reference' });
    assert.equal(ok.status, 0, ok.stderr);
  });

  it('LOWBIT_BACKEND=wasm selects the wasm backend (native stays the default otherwise)', () => {
    const active = (env: Record<string, string>) => spawnSync(process.execPath, [...process.execArgv, '--input-type=module', '-e', `const b = await import(${JSON.stringify(backendUrl)}); console.log(b.getBackend(), b.availableBackends().includes('wasm'));`], {
      env: { ...process.env, LOWBIT_BACKEND: '', LOWBIT_THREADS: '', LOWBIT_ISA: '', LOWBIT_AMX: '', ...env },
      encoding: 'utf8',
    });
    const wasm = active({ LOWBIT_BACKEND: 'wasm' });
    assert.equal(wasm.status, 0, wasm.stderr);
    assert.equal(wasm.stdout.trim(), 'wasm true');
    const unforced = active({});
    assert.equal(unforced.status, 0, unforced.stderr);
    assert.match(unforced.stdout.trim(), /^(native|reference) true$/);
  });

  for (const [name, value, expected] of [
    ['LOWBIT_BACKEND', 'fast', "'reference', 'native' or 'wasm'"],
    ['LOWBIT_THREADS', 'abc', 'an integer in \\[1, 256\\]'],
    ['LOWBIT_THREADS', '0', 'an integer in \\[1, 256\\]'],
    ['LOWBIT_THREADS', '300', 'an integer in \\[1, 256\\]'],
    ['LOWBIT_ISA', 'avx1024', "'avx512', 'avx2', 'avx2-novnni' or 'scalar'"],
    ['LOWBIT_AMX', 'yes', "'0' or '1'"],
  ] as const) {
    it(`refuses ${name}=${value}`, () => {
      const run = importWith({ [name]: value });
      assert.notEqual(run.status, 0);
      assert.match(run.stderr, new RegExp(`${name} must be ${expected}, got '${value}'`));
    });
  }
});
