import { test } from 'node:test';
import assert from 'node:assert/strict';
import { editDistance, flagName, formatOptions, parseOptions, suggestion, UsageError, type OptionSpecs } from './args.ts';

const specs = {
  model: { type: 'enum', choices: ['lenet5', 'mlp'], default: 'lenet5', help: 'model' },
  epochs: { type: 'int', positive: true, default: 3, help: 'epochs' },
  lr: { type: 'number', positive: true, help: 'learning rate' },
  momentum: { type: 'number', min: 0, max: 1, default: 0.9, help: 'momentum' },
  out: { type: 'string', help: 'output' },
  progress: { type: 'boolean', default: true, help: 'no bar' },
  verbose: { type: 'boolean', help: 'talk' },
  batchSize: { type: 'int', positive: true, default: 64, help: 'batch' },
} as const satisfies OptionSpecs;

function parse(argv: string[]) {
  const r = parseOptions(specs, argv, 'train');
  if (r.help) throw new Error('unexpected help');
  return r.options;
}

function usageError(argv: string[], pattern: RegExp): void {
  assert.throws(() => parseOptions(specs, argv, 'train'), (e: unknown) => e instanceof UsageError && e.command === 'train' && pattern.test(e.message));
}

test('defaults, values after a space or =, negated booleans, kebab-case flags', () => {
  assert.deepEqual(parse([]), { model: 'lenet5', epochs: 3, lr: undefined, momentum: 0.9, out: undefined, progress: true, verbose: false, batchSize: 64 });
  const o = parse(['--model', 'mlp', '--epochs=5', '--lr', '1e-3', '--no-progress', '--verbose', '--batch-size', '32', '--out', 'x/y']);
  assert.deepEqual(o, { model: 'mlp', epochs: 5, lr: 0.001, momentum: 0.9, out: 'x/y', progress: false, verbose: true, batchSize: 32 });
  // typed result: these assignments compile only with the right types
  const model: 'lenet5' | 'mlp' = o.model;
  const lr: number | undefined = o.lr;
  const progress: boolean = o.progress;
  assert.ok(model && lr && !progress);
  assert.equal(parse(['--epochs', '2', '--epochs', '7']).epochs, 7, 'last one wins');
});

test('--help anywhere', () => {
  assert.deepEqual(parseOptions(specs, ['--epochs', '2', '--help']), { help: true });
  assert.deepEqual(parseOptions(specs, ['-h']), { help: true });
});

test('validation errors are UsageErrors naming the option', () => {
  usageError(['--epochs', '0'], /'--epochs' must be > 0/);
  usageError(['--epochs', '2.5'], /expects an integer/);
  usageError(['--epochs', 'three'], /expects a number, got 'three'/);
  usageError(['--lr', ''], /expects a number/);
  usageError(['--lr', '-0.1'], /must be > 0/);
  usageError(['--momentum', '1.5'], /must be <= 1/);
  usageError(['--model', 'lenet'], /must be one of lenet5, mlp; got 'lenet' \(did you mean 'lenet5'\?\)/);
  usageError(['--epochs'], /needs a value/);
  usageError(['--verbose=yes'], /takes no value/);
  usageError(['--epoch', '3'], /unknown option '--epoch' \(did you mean '--epochs'\?\)/);
  usageError(['--no-epochs'], /unknown option/);
  usageError(['--zzzzzz'], /^unknown option '--zzzzzz'$/);
  usageError(['positional'], /unexpected argument 'positional'/);
  usageError(['-e', '3'], /options are spelled --name/);
  usageError(['--out', ''], /non-empty/);
});

test('help text lists every option with its default', () => {
  const text = formatOptions(specs);
  assert.match(text, /--model lenet5\|mlp +model \(default: lenet5\)/);
  assert.match(text, /--batch-size N +batch \(default: 64\)/);
  assert.match(text, /--no-progress +no bar/);
  assert.match(text, /--verbose +talk/);
  assert.match(text, /-h, --help/);
  // A flag wider than the column goes on its own line, its help indented below.
  const wide = formatOptions({ estimator: { type: 'enum', choices: ['ste', 'clippedSte', 'lsq', 'lsqPlus', 'pact', 'dorefa', 'lqnet'], help: 'estimator' }, seed: { type: 'int', help: 'seed' } });
  assert.equal(wide, ['  --estimator ste|clippedSte|lsq|lsqPlus|pact|dorefa|lqnet', `${' '.repeat(36)}estimator`, `  ${'--seed N'.padEnd(32)}  seed`, `  ${'-h, --help'.padEnd(32)}  show this help`].join('\n'));
});

test('helpers', () => {
  assert.equal(flagName('batchSize'), 'batch-size');
  assert.equal(flagName('testLimit'), 'test-limit');
  assert.equal(editDistance('kitten', 'sitting'), 3);
  assert.equal(suggestion('trian', ['train', 'info']), " (did you mean 'train'?)");
  assert.equal(suggestion('xyz', ['train', 'info']), '');
});
