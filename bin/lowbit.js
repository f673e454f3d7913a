#!/usr/bin/env node
// The `lowbit` command: loads the TypeScript sources through tsx, then runs the CLI.
import { register } from 'tsx/esm/api';

register();
const { runFromProcess } = await import('../src/cli/main.ts');
await runFromProcess();
