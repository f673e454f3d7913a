/**
 * Builds the browser example into OUT_DIR (a static site, no server code):
 *   main.js      main.ts bundled by esbuild for the browser (lowbit's "browser" export condition),
 *   index.html   the page,
 *   model.lowbit the integer model given on the command line (checked to load first),
 *   digits.json  the first COUNT MNIST test digits (the browser build has no npm data sets).
 *
 *   npx tsx examples/quickstart.ts                 # writes runs/quickstart/lenet5-w4a8.lowbit
 *   npx tsx examples/browser/build.ts runs/quickstart/lenet5-w4a8.lowbit [OUT_DIR] [COUNT]
 *   python3 -m http.server -d runs/browser 8080    # then open http://localhost:8080
 *
 * OUT_DIR defaults to runs/browser, COUNT (digits, 1..1000) to 16.
 *
 * (Pages fetch their files, so open them over HTTP, not as file://.)
 */
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { data, runtime } from 'lowbit';

const [modelPath, outDir = 'runs/browser', countText = '16'] = process.argv.slice(2);
if (modelPath === undefined) {
  console.error('usage: npx tsx examples/browser/build.ts MODEL.lowbit [OUT_DIR] [COUNT]');
  process.exit(2);
}
const count = Number(countText);
if (!Number.isInteger(count) || count < 1 || count > 1000) throw new Error(`COUNT must be an integer in 1..1000, got '${countText}'`);

// Refuse a file the page could not run: loadIntModel validates it completely.
const model = runtime.loadIntModel(modelPath);
const here = dirname(fileURLToPath(import.meta.url));
mkdirSync(outDir, { recursive: true });

// 1. The script. platform 'browser' makes esbuild use the "browser" condition of lowbit's
// package.json exports, and its "browser" field swaps out the Node.js-only files.
await build({
  entryPoints: [join(here, 'main.ts')],
  bundle: true, platform: 'browser', format: 'esm', target: 'es2022',
  outfile: join(outDir, 'main.js'), logLevel: 'warning',
});

// 2. The page and the model.
copyFileSync(join(here, 'index.html'), join(outDir, 'index.html'));
copyFileSync(modelPath, join(outDir, 'model.lowbit'));

// 3. A few test digits as bytes (the dataset's floats are exactly byte / 255).
const test = data.take(data.loadDataset('mnist', 'test'), count);
const pixels = Array.from(test.images, (v) => Math.round(v * 255));
writeFileSync(join(outDir, 'digits.json'), JSON.stringify({ count: test.length, labels: Array.from(test.labels), pixels }));

console.log(`built ${outDir}: index.html, main.js, model.lowbit (${model.nodes.length} nodes), digits.json (${test.length} digits)`);
console.log(`serve it, e.g.: python3 -m http.server -d ${outDir} 8080`);
