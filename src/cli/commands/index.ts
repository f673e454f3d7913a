/**
 * Every `lowbit` command by name. To add one: write `commands/<name>.ts` exporting a
 * `defineCommand({...})` value and add it here (the order is the order of `lowbit --help`).
 */
import type { Command } from '../command.ts';
import { infoCommand } from './info.ts';
import { trainCommand } from './train.ts';
import { quantizeCommand } from './quantize.ts';
import { evalCommand } from './eval.ts';
import { generateCommand } from './generate.ts';
import { searchCommand } from './search.ts';
import { exportCommand } from './export.ts';
import { verticalCommand } from './vertical.ts';
import { attackCommand } from './attack.ts';
import { nceCommand } from './nce.ts';

export const commands: Readonly<Record<string, Command>> = Object.freeze({
  train: trainCommand,
  quantize: quantizeCommand,
  search: searchCommand,
  eval: evalCommand,
  generate: generateCommand,
  export: exportCommand,
  vertical: verticalCommand,
  attack: attackCommand,
  nce: nceCommand,
  info: infoCommand,
});
