#!/usr/bin/env node
// The `lowbit` command. From a source checkout (src/ beside bin/) it loads the TypeScript sources
// through tsx, so an edit is live without a build; from the published package it runs the
// compiled dist/ (built by `npm run build`, run by `npm pack` / `npm publish`).
import { existsSync } from 'node:fs';

const fromSource = existsSync(new URL('../src/cli/main.ts', import.meta.url));
let cli;
try {
  if (fromSource) {
    const { register } = await import('tsx/esm/api');
    register();
    cli = await import('../src/cli/main.ts');
  } else {
    cli = await import('../dist/cli/main.js');
  }
} catch (error) {
  // Failing to load the library (e.g. an invalid LOWBIT_BACKEND) is reported like any runtime error.
  const message = error instanceof Error ? error.message : String(error);
  console.error(process.env.LOWBIT_DEBUG === '1' && error instanceof Error ? error.stack : `lowbit: error: ${message}`);
  process.exit(1);
}
await cli.runFromProcess();
