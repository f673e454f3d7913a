/**
 * Headless Chromium for end-to-end tests of generated HTML: Debian's /usr/bin/chromium driven by
 * playwright-core (a devDependency; no browser download). `chromiumUnavailable()` says why a test
 * must skip (no binary, or playwright-core not installed); `withChromiumPage` launches a fresh
 * profile, serves files from a directory on a localhost HTTP server, and records console errors
 * and page errors while the callback runs. `bundleBrowserEntry` bundles an entry (lines of
 * TypeScript run from the repository root) for the browser with esbuild.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AddressInfo } from 'node:net';
import type { Page } from 'playwright-core';

export const CHROMIUM_PATH = process.env.LOWBIT_CHROMIUM ?? '/usr/bin/chromium';

/** The launch flags: headless, no sandbox (containers), no GPU, no background network traffic. */
export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

/** Why Chromium cannot run here, or null when it can. */
export async function chromiumUnavailable(): Promise<string | null> {
  if (!existsSync(CHROMIUM_PATH)) return `no Chromium at ${CHROMIUM_PATH} (apt-get install chromium, or set LOWBIT_CHROMIUM)`;
  try {
    await import('playwright-core');
  } catch {
    return 'playwright-core is not installed (npm install --include=dev)';
  }
  return null;
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.svg': 'image/svg+xml', '.json': 'application/json', '.png': 'image/png', '.css': 'text/css',
};

/** Serves the files of `root` on 127.0.0.1 (GET only, no directory listing, no path escape), with `headers` on every answer. */
async function serve(root: string, headers: Record<string, string> = {}): Promise<{ server: Server; base: string }> {
  const server = createServer((req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname)).replace(/^([/\\])+/, '');
    const file = join(root, path);
    if (req.method !== 'GET' || path.startsWith('..') || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404).end('not found');
      return;
    }
    res.writeHead(200, { ...headers, 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' }).end(readFileSync(file));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, base: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

export interface PageProblems {
  /** Console messages of type 'error' and uncaught page errors. */
  readonly errors: string[];
  /** Requests that failed or answered >= 400. */
  readonly failedRequests: string[];
}

/** The headers that make a page cross-origin isolated (SharedArrayBuffer, threads for wasm). */
export const CROSS_ORIGIN_ISOLATION: Record<string, string> = { 'cross-origin-opener-policy': 'same-origin', 'cross-origin-embedder-policy': 'require-corp' };

/**
 * Serves `root` (with `headers` on every answer), opens `root/<file>` in a fresh headless Chromium
 * profile and runs `fn` on the loaded page. Returns what `fn` returned plus the problems seen while
 * loading and running.
 */
export async function withChromiumPage<T>(
  root: string, file: string, fn: (page: Page) => Promise<T>, headers: Record<string, string> = {},
): Promise<{ value: T; problems: PageProblems }> {
  const { chromium } = await import('playwright-core');
  const { server, base } = await serve(root, headers);
  const profile = mkdtempSync(join(tmpdir(), 'lowbit-chromium-'));
  const problems: PageProblems = { errors: [], failedRequests: [] };
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM_PATH, headless: true, args: CHROMIUM_ARGS, viewport: { width: 1280, height: 900 }, timeout: 60_000,
  });
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    page.on('console', (message) => {
      if (message.type() === 'error') problems.errors.push(`console: ${message.text()}`);
    });
    page.on('pageerror', (error) => problems.errors.push(`page error: ${error.message}`));
    page.on('requestfailed', (request) => problems.failedRequests.push(`${request.url()}: ${request.failure()?.errorText ?? 'failed'}`));
    page.on('response', (response) => {
      if (response.status() >= 400) problems.failedRequests.push(`${response.url()}: HTTP ${response.status()}`);
    });
    const response = await page.goto(`${base}/${file}`, { waitUntil: 'load' });
    if (!response || !response.ok()) throw new Error(`loading ${file}: HTTP ${response?.status() ?? 'no response'}`);
    const value = await fn(page);
    return { value, problems };
  } finally {
    await context.close();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    rmSync(profile, { recursive: true, force: true });
  }
}

/** Bundles `entry` (TypeScript lines, imports relative to the repository root) for the browser into `outfile` (ESM, es2022). */
export async function bundleBrowserEntry(entry: readonly string[], outfile: string): Promise<void> {
  const { build } = await import('esbuild');
  await build({
    stdin: { contents: entry.join('\n'), resolveDir: join(dirname(fileURLToPath(import.meta.url)), '..'), loader: 'ts', sourcefile: 'entry.ts' },
    bundle: true, platform: 'browser', format: 'esm', target: 'es2022', outfile, logLevel: 'silent',
  });
}
