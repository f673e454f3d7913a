/**
 * Loads the C++ addon once (Node.js). Bundlers building for the browser replace this file with
 * load.browser.ts (package.json "browser" field), where the addon is never available.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { NativeAddon } from './addon.ts';

const addonPath = fileURLToPath(new URL('../../../build/Release/lowbit_native.node', import.meta.url));

let addon: NativeAddon | null = null;
let loadError: string | null = null;

/** Default pool size: LOWBIT_THREADS, else the number of cores (at most 16). */
function defaultThreads(): number {
  const fromEnv = Number(process.env.LOWBIT_THREADS || NaN);  // checked by src/backend/index.ts
  if (Number.isInteger(fromEnv) && fromEnv >= 1) return Math.min(fromEnv, 256);
  return Math.max(1, Math.min(16, availableParallelism()));
}

/** @internal Loads the addon once; later calls return the same outcome. */
export function loadAddon(): NativeAddon | null {
  if (addon || loadError) return addon;
  if (!existsSync(addonPath)) {
    loadError = `${addonPath} not found (run \`npm run build:native\`)`;
    return null;
  }
  try {
    const require = createRequire(import.meta.url);
    const loaded: NativeAddon = require(addonPath);
    loaded.setThreads(defaultThreads());
    addon = loaded;
  } catch (error) {
    loadError = `loading ${addonPath} failed: ${error instanceof Error ? error.message : String(error)}`;
  }
  return addon;
}

/** @internal Why the addon did not load (null when it loaded or was not tried). */
export function addonLoadError(): string | null {
  return loadError;
}
