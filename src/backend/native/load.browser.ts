/**
 * The browser build's stand-in for load.ts (package.json "browser" field): there is no native
 * addon in a browser, so lowbit runs on the pure-TypeScript reference backend.
 */
import type { NativeAddon } from './addon.ts';

/** @internal Always null in the browser. */
export function loadAddon(): NativeAddon | null {
  return null;
}

/** @internal Why the addon did not load. */
export function addonLoadError(): string | null {
  return 'no native addon in the browser';
}
