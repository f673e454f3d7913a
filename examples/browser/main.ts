/**
 * The browser example's script (bundled by build.ts into main.js). It fetches an integer model
 * (model.lowbit) and a few MNIST digits (digits.json), runs the model with lowbit's browser build,
 * and shows each digit with its predicted class.
 *
 * `import ... from 'lowbit'` is the same line as on Node.js: a bundler that honours the "browser"
 * export condition (esbuild, Vite, webpack) picks lowbit's browser entry, where IntModel.run uses
 * the TypeScript executor (integer GEMMs on WebAssembly SIMD128, or doubles without SIMD).
 */
import { format, runtime } from 'lowbit';

/** digits.json as build.ts writes it: `count` images of 28×28 bytes (0..255), row-major, and their labels. */
interface Digits {
  readonly count: number;
  readonly labels: number[];
  readonly pixels: number[];
}

const status = document.getElementById('status')!;
const gallery = document.getElementById('digits')!;

async function fetchBytes(url: string): Promise<Uint8Array> {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

async function main(): Promise<void> {
  // decodeLowbit validates the header, every offset and shape before touching the data.
  const model = runtime.intModelFromLowbit(format.decodeLowbit(await fetchBytes('model.lowbit')));
  const digits = (await (await fetch('digits.json')).json()) as Digits;
  const per = 28 * 28;
  if (digits.pixels.length !== digits.count * per || digits.labels.length !== digits.count) throw new Error('digits.json: sizes do not match its count');

  // The model was trained on normalised pixels: (x/255 − mean) / std, with the statistics it
  // carries in its metadata (the quick start stores them there).
  const stats = model.graph.metadata?.normalize as { mean: number; std: number } | undefined;
  if (!stats || typeof stats.mean !== 'number' || typeof stats.std !== 'number') throw new Error('model.lowbit: no normalize {mean, std} in its metadata');
  const x = new Float32Array(digits.count * per);
  const inv = 1 / stats.std;
  for (let i = 0; i < x.length; i++) {
    x[i] = digits.pixels[i]! / 255;
    x[i] = (x[i]! - stats.mean) * inv;
  }

  const start = performance.now();
  const logits = model.run(x, digits.count); // [count, 10] float32 (dequantized integer outputs)
  const ms = performance.now() - start;

  const classes = logits.length / digits.count;
  const predictions: number[] = [];
  let correct = 0;
  for (let i = 0; i < digits.count; i++) {
    let best = 0;
    for (let c = 1; c < classes; c++) if (logits[i * classes + c]! > logits[i * classes + best]!) best = c;
    predictions.push(best);
    if (best === digits.labels[i]) correct++;
    gallery.append(digitFigure(digits.pixels.slice(i * per, (i + 1) * per), best, digits.labels[i]!));
  }
  status.textContent = `classified ${digits.count} digits: ${correct} correct (${ms.toFixed(1)} ms); predictions ${predictions.join(' ')}`;
}

/** A 28×28 canvas of the digit and a caption "predicted (label)". */
function digitFigure(pixels: number[], predicted: number, label: number): HTMLElement {
  const canvas = document.createElement('canvas');
  canvas.width = 28;
  canvas.height = 28;
  const context = canvas.getContext('2d')!;
  const image = context.createImageData(28, 28);
  pixels.forEach((v, i) => {
    image.data.set([255 - v, 255 - v, 255 - v, 255], i * 4);
  });
  context.putImageData(image, 0, 0);
  const figure = document.createElement('figure');
  const caption = document.createElement('figcaption');
  caption.textContent = predicted === label ? `${predicted}` : `${predicted} (is ${label})`;
  if (predicted !== label) caption.className = 'wrong';
  figure.append(canvas, caption);
  return figure;
}

main().catch((error: unknown) => {
  status.textContent = `error: ${error instanceof Error ? error.message : String(error)}`;
  console.error(error);
});
