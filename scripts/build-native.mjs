// Builds the C++ addon (build/Release/lowbit_native.node) with node-gyp; run by `npm install`.
// Never fails the install: without a compiler, or when the build breaks, it prints one warning
// line and exits 0, and lowbit runs on its reference (pure TypeScript) backend.
// Skips the build when the addon is newer than every source, unless --force is given.
// With --force (`npm run build:native`, a developer asking for the build) a failed build exits 1,
// so a broken C++ change cannot pass unnoticed as "tests ran on the reference backend".
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const addon = join(root, 'build', 'Release', 'lowbit_native.node');
const force = process.argv.includes('--force');
const verbose = process.argv.includes('--verbose') || process.env.LOWBIT_BUILD_VERBOSE === '1';

function warn(reason, { failure = false } = {}) {
  if (failure && force) {
    console.error(`lowbit: native addon build failed (${reason}); rerun with --verbose for the compiler output`);
    process.exit(1);
  }
  console.warn(`lowbit: native addon not built (${reason}); using the reference TypeScript backend`);
  process.exit(0);
}

function sources() {
  const files = [join(root, 'binding.gyp'), fileURLToPath(import.meta.url)];
  const dir = join(root, 'native');
  if (existsSync(dir)) {
    for (const name of readdirSync(dir)) if (/\.(cc|h)$/.test(name)) files.push(join(dir, name));
  }
  return files;
}

function upToDate() {
  if (!existsSync(addon)) return false;
  const built = statSync(addon).mtimeMs;
  return sources().every((file) => statSync(file).mtimeMs <= built);
}

/** The command that runs node-gyp: npm's bundled copy when we can find it, else npx. */
function nodeGypCommand() {
  const candidates = [];
  if (process.env.npm_config_node_gyp) candidates.push(process.env.npm_config_node_gyp);
  if (process.env.npm_execpath) {
    candidates.push(join(dirname(process.env.npm_execpath), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  }
  // npm installed beside node (e.g. /usr/lib/node_modules/npm or <prefix>/lib/node_modules/npm).
  const prefix = resolve(dirname(process.execPath), '..');
  candidates.push(join(prefix, 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  candidates.push(join(prefix, 'share', 'nodejs', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  candidates.push(join(root, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  for (const file of candidates) {
    if (file && existsSync(file)) return { cmd: process.execPath, args: [file] };
  }
  return { cmd: process.platform === 'win32' ? 'npx.cmd' : 'npx', args: ['--no-install', 'node-gyp'] };
}

function hasCompiler() {
  const cxx = process.env.CXX || 'c++';
  const probe = spawnSync(cxx, ['--version'], { stdio: 'ignore' });
  return probe.status === 0;
}

if (process.env.LOWBIT_SKIP_NATIVE === '1') warn('LOWBIT_SKIP_NATIVE=1');
if (!force && upToDate()) process.exit(0);
if (!hasCompiler()) warn(`no C++ compiler (${process.env.CXX || 'c++'}) found`);

const { cmd, args } = nodeGypCommand();
// Headers: npm's nodedir config when set, else the headers installed beside this node binary
// (e.g. /usr/include/node). Either keeps node-gyp from downloading anything.
function localNodedir() {
  if (process.env.npm_config_nodedir) return process.env.npm_config_nodedir;
  const prefix = resolve(dirname(process.execPath), '..');
  const headers = join(prefix, 'include', 'node');
  return existsSync(join(headers, 'node_api.h')) && existsSync(join(headers, 'common.gypi')) ? prefix : undefined;
}
const nodedir = localNodedir();
const gypArgs = [...args, 'rebuild', `--jobs=${Math.max(1, Math.min(4, (await import('node:os')).availableParallelism()))}`];
if (nodedir) gypArgs.push(`--nodedir=${nodedir}`);
// (a large maxBuffer: GCC 12 prints hundreds of false -Wmaybe-uninitialized warnings for the AVX-512
// intrinsics' undefined pass-through operands; past the default 1 MB spawnSync fails with ENOBUFS)
const run = spawnSync(cmd, gypArgs, { cwd: root, stdio: verbose ? 'inherit' : 'pipe', encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
if (run.error || run.status !== 0) {
  if (!verbose && run.stderr) {
    const lines = run.stderr.split('\n').filter((l) => /error/i.test(l));
    if (process.env.LOWBIT_BUILD_DEBUG === '1') console.error(run.stdout, run.stderr);
    warn(`node-gyp failed: ${(lines[0] ?? run.error?.message ?? `exit ${run.status}`).trim()}`, { failure: true });
  }
  warn(`node-gyp failed with exit ${run.status ?? run.error?.message}`, { failure: true });
}
if (!existsSync(addon)) warn('node-gyp finished but produced no addon', { failure: true });
