/**
 * The int8 GEMM paths of the AVX2 ISA agree bit for bit: LOWBIT_ISA=avx2 (the AVX-VNNI ymm kernel
 * on CPUs with AVX-VNNI), avx2-novnni (the exact int16 multiply-add kernel) and scalar, each on 1 and
 * 2 threads, against the TypeScript reference (integer sums wrapping modulo 2^32) computed here.
 * Odd shapes: K not a multiple of 4 (and past one 1024-byte K block), N tails of a 16-channel panel
 * and of a 64-channel block, M tails of the 6-row tile and past one 96-row task tile; uint8 and
 * int8 activations with zero points at the ends of their ranges; int8 and int4 weights; sums that
 * wrap past 2^31.
 * Each ISA runs in a child process (the native ISA is fixed when the addon loads): this file run
 * with `--child THREADS` prints one JSON line {int8, hashes}.
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { loadAddon } from '../../backend/native/load.ts';
import { rng } from './cross-check.ts';
import { gemmInt4, gemmInt4Ref, gemmInt8, gemmInt8Ref, intKernelsBackend, packInt8Weights } from './index.ts';

/** M x N x K cases: every M, N and K below meets the others in a Latin-square walk. */
const MS = [1, 5, 7, 13, 97];
const NS = [1, 15, 17, 33, 65, 130];
const KS = [1, 2, 3, 5, 7, 13, 63, 66, 1030];

interface Case { M: number; N: number; K: number; signed: boolean; zero: number; bits: 8 | 4; a: Int8Array | Uint8Array; w: Uint8Array | Int8Array }

function cases(): Case[] {
  const next = rng(4242);
  const out: Case[] = [];
  for (let i = 0; i < KS.length; i++) {
    for (let j = 0; j < NS.length; j++) {
      const K = KS[i]!, N = NS[j]!, M = MS[(i + j) % MS.length]!;
      const signed = (i + j) % 2 === 1;
      const zeros = signed ? [-128, 127, (next() % 256) - 128] : [0, 255, next() % 256];
      const zero = zeros[(i * 3 + j) % 3]!;
      const bits = (i + 2 * j) % 3 === 0 ? 4 : 8;
      const a = signed ? new Int8Array(M * K) : new Uint8Array(M * K);
      for (let t = 0; t < a.length; t++) a[t] = next() & 0xff;
      // int4: rows of ceil(K / 2) bytes, any byte value is two valid nibbles
      const w = bits === 8 ? new Int8Array(N * K) : new Uint8Array(N * Math.ceil(K / 2));
      for (let t = 0; t < w.length; t++) w[t] = next() & 0xff;
      out.push({ M, N, K, signed, zero, bits, a, w });
    }
  }
  // sums past 2^31 wrap (vpdpbusd, not the saturating vpdpbusds): a = 255, w = 127 over K = 70001
  // gives 2.27e9 per channel, and the zero point 255 wraps -255 * rowSum the other way
  for (const zero of [0, 255]) {
    const M = 2, N = 17, K = 70001;
    out.push({ M, N, K, signed: false, zero, bits: 8, a: new Uint8Array(M * K).fill(255), w: new Int8Array(N * K).fill(127) });
  }
  return out;
}

/** FNV-1a over the int32 words. */
function hash(c: Int32Array): string {
  let h = 0x811c9dc5;
  for (const v of c) {
    for (let s = 0; s < 32; s += 8) h = Math.imul(h ^ ((v >>> s) & 0xff), 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, '0');
}

function run(reference: boolean): string[] {
  return cases().map(({ M, N, K, zero, bits, a, w }) => {
    const c = new Int32Array(M * N).fill(0x5a5a5a5a);
    if (bits === 8) {
      if (reference) gemmInt8Ref(M, N, K, a, zero, w as Int8Array, c);
      else gemmInt8(M, N, K, a, zero, packInt8Weights(w as Int8Array, N, K), c);
    } else if (reference) {
      gemmInt4Ref(M, N, K, a, zero, w as Uint8Array, c);
    } else {
      gemmInt4(M, N, K, a, zero, w as Uint8Array, c);
    }
    return hash(c);
  });
}

const thisFile = fileURLToPath(import.meta.url);

if (process.argv[1] === thisFile && process.argv[2] === '--child') {
  const threads = Number(process.argv[3]);
  loadAddon()!.setThreads(threads);
  console.log(JSON.stringify({ int8: intKernelsBackend().int8, hashes: run(false) }));
} else {
  const addon = loadAddon();
  const avxVnni = !!addon && addon.info().features.includes('avxvnni');
  const expected: Record<string, string> = { avx2: avxVnni ? 'avx-vnni' : 'avx2', 'avx2-novnni': 'avx2', scalar: 'scalar' };
  test('int8 / int4 GEMM: avx2 (AVX-VNNI) = avx2-novnni = scalar = reference, bit for bit, on 1 and 2 threads (odd M, N, K, zero points)', { skip: !addon?.gemmInt8Packed && 'addon without integer kernels' }, (t) => {
    const want = run(true);
    const all = cases();
    assert.equal(new Set(want).size, want.length, 'every case has its own result');
    for (const isa of ['avx2', 'avx2-novnni', 'scalar']) {
      for (const threads of [1, 2]) {
        const r = spawnSync(process.execPath, ['--import', 'tsx', thisFile, '--child', String(threads)], {
          encoding: 'utf8', env: { ...process.env, LOWBIT_ISA: isa }, timeout: 120_000,
        });
        assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
        const got = JSON.parse(r.stdout.trim().split('\n').pop()!) as { int8: string; hashes: string[] };
        assert.equal(got.int8, expected[isa], `LOWBIT_ISA=${isa} runs the ${expected[isa]} int8 path`);
        for (let i = 0; i < want.length; i++) {
          const { M, N, K, signed, zero, bits } = all[i]!;
          assert.equal(got.hashes[i], want[i], `${isa}, ${threads} thread(s): int${bits} ${M}x${N}x${K} ${signed ? 'int8' : 'uint8'} a, z=${zero}`);
        }
        t.diagnostic(`${isa} (${got.int8}), ${threads} thread(s): ${want.length} cases equal`);
      }
    }
  });
}
