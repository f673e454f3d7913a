#!/usr/bin/env node
// The `lowbit` command: loads the TypeScript sources through tsx, then runs the CLI.
import { register } from 'tsx/esm/api';

register();
let cli;
try {
  cli = await import('../src/cli/main.ts');
} catch (error) {
  // Failing to load the library (e.g. an invalid LOWBIT_BACKEND) is reported like any runtime error.
  const message = error instanceof Error ? error.message : String(error);
  console.error(process.env.LOWBIT_DEBUG === '1' && error instanceof Error ? error.stack : `lowbit: error: ${message}`);
  process.exit(1);
}
await cli.runFromProcess();
