import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { DataError } from './errors.ts';

const require = createRequire(import.meta.url);

/** Directory of an installed npm package, or a `DataError('missing-package')` telling how to install it. */
export function packageDir(pkg: string, what: string): string {
  try {
    return dirname(require.resolve(`${pkg}/package.json`));
  } catch {
    throw new DataError('missing-package', `${what} needs the '${pkg}' npm package, which is not installed: run \`npm install ${pkg}\``);
  }
}
