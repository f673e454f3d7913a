/**
 * The report of a mixed-precision search: one SVG scatter plot per cost (accuracy vs that cost,
 * the Pareto front as a staircase, uniform bit widths marked distinctly, the chosen plan
 * highlighted) and a self-contained HTML page holding those plots inline, a summary, the front
 * table and the per-layer table of the chosen plan. Plain strings built here (no chart library,
 * no script, no external resource), written atomically.
 */
import { makeParentDirs, writeFileAtomic } from '../../format/index.ts';

/**
 * What the y axis shows. A point's `accuracy` is its score (higher is better); `axis` maps it to the
 * plotted value (higher is drawn higher), `tick` labels an axis value, `text` shows a score.
 */
export interface ReportMetric {
  /** 'accuracy' or 'perplexity': the column and axis title. */
  readonly name: string;
  axis(score: number): number;
  tick(value: number): string;
  text(score: number): string;
  /** Highest meaningful axis value (accuracy: 100 %). */
  readonly axisMax?: number;
}

/** Accuracy in percent (the default metric). */
export const ACCURACY_METRIC: ReportMetric = {
  name: 'accuracy', axis: (s) => s * 100, tick: (v) => `${Number(v.toPrecision(10))}%`, text: (s) => `${(s * 100).toFixed(2)}%`, axisMax: 100,
};

/**
 * Perplexity of a language model, whose score is 1/perplexity (quant/search/lm.ts): drawn as
 * −perplexity so that better is higher, labelled with the perplexity.
 */
export const PERPLEXITY_METRIC: ReportMetric = {
  name: 'perplexity', axis: (s) => -1 / s, tick: (v) => `${Number((-v).toPrecision(10))}`, text: (s) => (1 / s).toFixed(2),
};

/** What a plotted point is. */
export type PointKind = 'evaluated' | 'front' | 'uniform' | 'chosen' | 'beacon';

/** One candidate of the search, as the report shows it. */
export interface ReportPoint {
  /** Accuracy in [0, 1], or the score of `SearchReport.metric`. */
  readonly accuracy: number;
  /** Value of each cost, keyed like `ReportCost.key`. */
  readonly costs: Readonly<Record<string, number>>;
  readonly kind: PointKind;
  /** Short name shown next to uniform and chosen points ('W4A8', 'plan'). */
  readonly label?: string;
  /** Per-layer bits, e.g. '8/4/4/2/8', shown in tooltips and the front table. */
  readonly bits?: string;
}

/** A cost axis. */
export interface ReportCost {
  readonly key: string;
  /** Axis title, e.g. 'model size'. */
  readonly label: string;
  /** Unit for `formatSi` ('B', 'bitops', 's', 'J', ...). */
  readonly unit: string;
  /** Budget on this cost, drawn as a dashed vertical line. */
  readonly budget?: number;
}

/** One row of the per-layer table. */
export interface ReportLayer {
  readonly name: string;
  readonly type: string;
  readonly params: number;
  readonly macs: number;
  readonly weightBits: number | null;
  readonly activationBits: number | null;
  /** This layer's share of each cost (keys of `ReportCost`). */
  readonly costs?: Readonly<Record<string, number>>;
  /** Sensitivity score, when the search measured one. */
  readonly sensitivity?: number;
}

export interface SearchReport {
  readonly title: string;
  /** Key/value lines of the summary (model, dataset, method, budget, time...). */
  readonly summary: readonly (readonly [string, string])[];
  readonly costs: readonly ReportCost[];
  readonly points: readonly ReportPoint[];
  /** Per-layer table of the chosen plan. */
  readonly layers: readonly ReportLayer[];
  /** Accuracy of the float model, drawn as a dotted horizontal line. */
  readonly floatAccuracy?: number;
  /** Lower end of the accuracy axis (points below are drawn on the edge as ▼ with their value); default: the lowest point. */
  readonly minAccuracy?: number;
  /** Free text shown under the plots (how points were evaluated). */
  readonly notes?: readonly string[];
  /** What the scores are (default: accuracy). */
  readonly metric?: ReportMetric;
}

const SI_UP = ['', 'k', 'M', 'G', 'T', 'P'];
const SI_DOWN = ['', 'm', 'µ', 'n', 'p'];

/** `value` with an SI prefix and 3 significant digits: formatSi(40960, 'B') = '41.0 kB', formatSi(0.0021, 's') = '2.10 ms'. */
export function formatSi(value: number, unit: string): string {
  if (!Number.isFinite(value)) return `${value} ${unit}`.trim();
  if (value === 0) return `0 ${unit}`.trim();
  // Round to 3 significant digits first, so that 9999.7 becomes 10.0 k, not 10.00 k.
  const rounded = Number(value.toPrecision(3));
  let exponent = Math.floor(Math.log10(Math.abs(rounded)) / 3);
  exponent = Math.max(-(SI_DOWN.length - 1), Math.min(SI_UP.length - 1, exponent));
  const scaled = rounded / 1000 ** exponent;
  const prefix = exponent >= 0 ? SI_UP[exponent]! : SI_DOWN[-exponent]!;
  const digits = Math.abs(scaled) >= 100 ? 0 : Math.abs(scaled) >= 10 ? 1 : 2;
  return `${scaled.toFixed(digits)} ${prefix}${unit}`.trim();
}

/** Escapes text for HTML and SVG (element content and quoted attributes). */
export function escapeHtml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');
}

/**
 * About `count` round tick values covering [lo, hi] (steps of 1, 2 or 5 × 10^k), all inside the
 * range. A degenerate range gives its single value.
 */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / Math.max(1, count);
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  // The 1-2-5 step whose number of intervals is closest to `count`.
  const steps = [1, 2, 5, 10].map((m) => m * magnitude);
  const step = steps.reduce((best, s) => (Math.abs((hi - lo) / s - count) < Math.abs((hi - lo) / best - count) ? s : best));
  const ticks: number[] = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

export interface ParetoSvgOptions {
  /** Pixel size (default 560 × 380). */
  readonly width?: number;
  readonly height?: number;
  readonly floatAccuracy?: number;
  readonly minAccuracy?: number;
  /** Element id of the <svg>. */
  readonly id?: string;
  /** What the scores are (default: accuracy). */
  readonly metric?: ReportMetric;
}

interface Style {
  readonly fill: string;
  readonly stroke: string;
  readonly name: string;
}

const STYLES: Record<PointKind, Style> = {
  evaluated: { fill: '#c9ced6', stroke: '#9aa3af', name: 'evaluated' },
  front: { fill: '#2563eb', stroke: '#1e40af', name: 'Pareto front' },
  beacon: { fill: '#ffffff', stroke: '#059669', name: 'beacon (retrained)' },
  uniform: { fill: '#f59e0b', stroke: '#b45309', name: 'uniform bits' },
  chosen: { fill: '#dc2626', stroke: '#7f1d1d', name: 'chosen plan' },
};
/** Drawing order: later kinds on top. */
const DRAW_ORDER: readonly PointKind[] = ['evaluated', 'front', 'beacon', 'uniform', 'chosen'];

function fmt(v: number): string {
  return Number(v.toFixed(2)).toString();
}

function marker(kind: PointKind, x: number, y: number, clipped: boolean): string {
  const s = STYLES[kind];
  const attrs = `fill="${s.fill}" stroke="${s.stroke}" stroke-width="1.2"`;
  if (clipped) return `<path d="M${fmt(x - 5)},${fmt(y - 8)} L${fmt(x + 5)},${fmt(y - 8)} L${fmt(x)},${fmt(y)} Z" ${attrs}/>`;
  switch (kind) {
    case 'evaluated':
      return `<circle cx="${fmt(x)}" cy="${fmt(y)}" r="2.5" ${attrs}/>`;
    case 'front':
      return `<circle cx="${fmt(x)}" cy="${fmt(y)}" r="4" ${attrs}/>`;
    case 'beacon':
      return `<circle cx="${fmt(x)}" cy="${fmt(y)}" r="7" fill="none" stroke="${s.stroke}" stroke-width="2"/>`;
    case 'uniform':
      return `<rect x="${fmt(x - 5)}" y="${fmt(y - 5)}" width="10" height="10" ${attrs}/>`;
    case 'chosen': {
      const pts: string[] = [];
      for (let i = 0; i < 10; i++) {
        const r = i % 2 === 0 ? 9 : 4;
        const a = -Math.PI / 2 + (i * Math.PI) / 5;
        pts.push(`${fmt(x + r * Math.cos(a))},${fmt(y + r * Math.sin(a))}`);
      }
      return `<polygon points="${pts.join(' ')}" ${attrs}/>`;
    }
  }
}

/**
 * An SVG scatter plot of accuracy (y, %) against one cost (x): every point by kind, the Pareto
 * front as a staircase through its points, the budget as a dashed line, the float accuracy as a
 * dotted one. Every point has a <title> tooltip. Returns the <svg> element as a string.
 */
export function paretoSvg(points: readonly ReportPoint[], cost: ReportCost, options: ParetoSvgOptions = {}): string {
  const width = options.width ?? 560;
  const height = options.height ?? 380;
  const margin = { left: 64, right: 20, top: 40, bottom: 52 };
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  const metric = options.metric ?? ACCURACY_METRIC;
  const usable = points.filter((p) => Number.isFinite(p.costs[cost.key]) && Number.isFinite(metric.axis(p.accuracy)));
  const xs = usable.map((p) => p.costs[cost.key]!);
  if (cost.budget !== undefined) xs.push(cost.budget);
  const accs = usable.map((p) => metric.axis(p.accuracy));
  if (options.floatAccuracy !== undefined) accs.push(metric.axis(options.floatAccuracy));
  let xLo = xs.length ? Math.min(...xs) : 0;
  let xHi = xs.length ? Math.max(...xs) : 1;
  if (!(xHi > xLo)) [xLo, xHi] = [xLo - 1, xHi + 1];
  const padX = (xHi - xLo) * 0.06;
  xLo = Math.max(0, xLo - padX);
  xHi += padX;
  let yLo = options.minAccuracy !== undefined ? metric.axis(options.minAccuracy) : accs.length ? Math.min(...accs) : 0;
  let yHi = accs.length ? Math.max(...accs) : metric.axisMax ?? 1;
  if (!(yHi > yLo)) [yLo, yHi] = [yLo - 0.5, yHi + 0.5];
  const padY = (yHi - yLo) * 0.08;
  yLo -= options.minAccuracy !== undefined ? 0 : padY;
  yHi = Math.min(metric.axisMax ?? Infinity, yHi + padY);
  const X = (v: number) => margin.left + ((v - xLo) / (xHi - xLo)) * plotW;
  const Y = (v: number) => margin.top + (1 - (Math.max(yLo, v) - yLo) / (yHi - yLo)) * plotH;

  const out: string[] = [];
  const id = options.id ? ` id="${escapeHtml(options.id)}"` : '';
  out.push(`<svg xmlns="http://www.w3.org/2000/svg"${id} class="pareto" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="${escapeHtml(`${metric.name} vs ${cost.label}`)}" font-family="system-ui, sans-serif" font-size="11">`);
  out.push(`<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`);
  out.push(`<text x="${margin.left}" y="20" font-size="13" font-weight="600" fill="#111827">${escapeHtml(`${metric.name[0]!.toUpperCase()}${metric.name.slice(1)} vs ${cost.label}`)}</text>`);
  // Grid and ticks.
  for (const t of niceTicks(xLo, xHi, 6)) {
    const x = X(t);
    out.push(`<line x1="${fmt(x)}" y1="${margin.top}" x2="${fmt(x)}" y2="${margin.top + plotH}" stroke="#eef0f3"/>`);
    out.push(`<text x="${fmt(x)}" y="${margin.top + plotH + 16}" text-anchor="middle" fill="#374151">${escapeHtml(formatSi(t, cost.unit))}</text>`);
  }
  for (const t of niceTicks(yLo, yHi, 6)) {
    const y = Y(t);
    out.push(`<line x1="${margin.left}" y1="${fmt(y)}" x2="${margin.left + plotW}" y2="${fmt(y)}" stroke="#eef0f3"/>`);
    out.push(`<text x="${margin.left - 6}" y="${fmt(y + 4)}" text-anchor="end" fill="#374151">${escapeHtml(metric.tick(t))}</text>`);
  }
  out.push(`<rect x="${margin.left}" y="${margin.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#9ca3af"/>`);
  out.push(`<text x="${margin.left + plotW / 2}" y="${height - 12}" text-anchor="middle" fill="#111827">${escapeHtml(`${cost.label} (${cost.unit})`)}</text>`);
  out.push(`<text transform="translate(16 ${margin.top + plotH / 2}) rotate(-90)" text-anchor="middle" fill="#111827">${escapeHtml(metric === ACCURACY_METRIC ? 'accuracy (%)' : metric.name)}</text>`);
  if (options.floatAccuracy !== undefined) {
    const y = Y(metric.axis(options.floatAccuracy));
    out.push(`<line x1="${margin.left}" y1="${fmt(y)}" x2="${margin.left + plotW}" y2="${fmt(y)}" stroke="#6b7280" stroke-dasharray="2 3"/>`);
  }
  if (cost.budget !== undefined) {
    const x = X(cost.budget);
    out.push(`<line x1="${fmt(x)}" y1="${margin.top}" x2="${fmt(x)}" y2="${margin.top + plotH}" stroke="#dc2626" stroke-dasharray="6 4"/>`);
    out.push(`<text x="${fmt(x + 4)}" y="${margin.top + 12}" fill="#dc2626">${escapeHtml(`budget ${formatSi(cost.budget, cost.unit)}`)}</text>`);
  }
  // The front of THIS projection (accuracy vs this cost) as a staircase.
  const onFront = frontOf(usable, cost.key);
  if (onFront.length > 0) {
    const path: string[] = [];
    onFront.forEach((p, i) => {
      const x = X(p.costs[cost.key]!);
      const y = Y(metric.axis(p.accuracy));
      if (i === 0) path.push(`M${fmt(x)},${fmt(y)}`);
      else path.push(`H${fmt(x)} V${fmt(y)}`);
    });
    path.push(`H${fmt(margin.left + plotW)}`);
    out.push(`<path class="front-line" d="${path.join(' ')}" fill="none" stroke="#2563eb" stroke-width="1.5" stroke-opacity="0.7"/>`);
  }
  for (const kind of DRAW_ORDER) {
    for (const p of usable.filter((q) => q.kind === kind)) {
      const x = X(p.costs[cost.key]!);
      const clipped = metric.axis(p.accuracy) < yLo;
      const y = Y(metric.axis(p.accuracy));
      const tip = `${p.label ? `${p.label}: ` : ''}${metric === ACCURACY_METRIC ? '' : `${metric.name} `}${metric.text(p.accuracy)}, ${formatSi(p.costs[cost.key]!, cost.unit)}${p.bits ? `, bits ${p.bits}` : ''}`;
      out.push(`<g class="point ${kind}"><title>${escapeHtml(tip)}</title>${marker(kind, x, y, clipped)}</g>`);
      if (p.label && (kind === 'uniform' || kind === 'chosen')) {
        const text = clipped ? `${p.label} ${metric === ACCURACY_METRIC ? `${(p.accuracy * 100).toFixed(1)}%` : metric.text(p.accuracy)}` : p.label;
        out.push(`<text x="${fmt(x + 8)}" y="${fmt(clipped ? y - 10 : y - 7)}" fill="${STYLES[kind].stroke}" font-weight="600">${escapeHtml(text)}</text>`);
      }
    }
  }
  // Legend of the kinds present, in the lower right corner (where low accuracy at high cost would be).
  const present = DRAW_ORDER.filter((k) => usable.some((p) => p.kind === k));
  const hasFloat = options.floatAccuracy !== undefined;
  if (present.length > 0 || hasFloat) {
    const boxW = 136;
    const boxH = 8 + (present.length + (hasFloat ? 1 : 0)) * 18;
    const bx = margin.left + plotW - boxW - 8;
    const by = margin.top + plotH - boxH - 8;
    out.push(`<g class="legend"><rect x="${bx}" y="${by}" width="${boxW}" height="${boxH}" fill="#ffffff" fill-opacity="0.85" stroke="#e5e7eb"/>`);
    present.forEach((kind, i) => {
      const ly = by + 13 + i * 18;
      out.push(`${marker(kind, bx + 14, ly, false)}<text x="${bx + 28}" y="${ly + 4}" fill="#374151">${escapeHtml(STYLES[kind].name)}</text>`);
    });
    if (hasFloat) {
      const ly = by + 13 + present.length * 18;
      out.push(`<line x1="${bx + 6}" y1="${ly}" x2="${bx + 22}" y2="${ly}" stroke="#6b7280" stroke-dasharray="2 3"/><text x="${bx + 28}" y="${ly + 4}" fill="#374151">float32 ${metric.text(options.floatAccuracy!)}</text>`);
    }
    out.push('</g>');
  }
  out.push('</svg>');
  return out.join('\n');
}

/** Points on the 2-D front (max accuracy, min cost), sorted by cost. @internal */
export function frontOf(points: readonly ReportPoint[], key: string): ReportPoint[] {
  const sorted = [...points].sort((a, b) => a.costs[key]! - b.costs[key]! || b.accuracy - a.accuracy);
  const out: ReportPoint[] = [];
  let best = -Infinity;
  for (const p of sorted) {
    if (p.accuracy > best) {
      out.push(p);
      best = p.accuracy;
    }
  }
  return out;
}

const CSS = `
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #111827; background: #f9fafb; }
h1 { font-size: 20px; margin: 0 0 12px; }
h2 { font-size: 16px; margin: 24px 0 8px; }
.plots { display: flex; flex-wrap: wrap; gap: 16px; }
.plots svg { border: 1px solid #e5e7eb; border-radius: 6px; background: #fff; }
table { border-collapse: collapse; background: #fff; font-size: 13px; }
th, td { border: 1px solid #e5e7eb; padding: 4px 8px; text-align: right; }
th { background: #f3f4f6; }
td.name, th.name, td.text { text-align: left; }
table.summary td:first-child { text-align: left; color: #4b5563; }
tr.uniform td { background: #fffbeb; }
tr.chosen td { background: #fef2f2; font-weight: 600; }
p.note { color: #4b5563; font-size: 13px; max-width: 70em; }
`;


function bitsCell(bits: number | null): string {
  return bits === null ? 'float' : String(bits);
}

/** The self-contained HTML page of a search report (no script, no external resource). */
export function renderReportHtml(report: SearchReport): string {
  const e = escapeHtml;
  const metric = report.metric ?? ACCURACY_METRIC;
  const parts: string[] = [];
  parts.push('<!DOCTYPE html>');
  parts.push('<html lang="en"><head><meta charset="utf-8">');
  parts.push('<meta name="viewport" content="width=device-width, initial-scale=1">');
  parts.push('<link rel="icon" href="data:,">');
  parts.push(`<title>${e(report.title)}</title>`);
  parts.push(`<style>${CSS}</style></head><body>`);
  parts.push(`<h1>${e(report.title)}</h1>`);
  parts.push('<table class="summary" id="summary"><tbody>');
  for (const [k, v] of report.summary) parts.push(`<tr><td>${e(k)}</td><td class="text">${e(v)}</td></tr>`);
  parts.push('</tbody></table>');

  parts.push('<h2>Pareto front</h2><div class="plots">');
  for (const cost of report.costs) {
    parts.push(paretoSvg(report.points, cost, { floatAccuracy: report.floatAccuracy, minAccuracy: report.minAccuracy, id: `pareto-${cost.key}`, ...(report.metric ? { metric: report.metric } : {}) }));
  }
  parts.push('</div>');
  for (const note of report.notes ?? []) parts.push(`<p class="note">${e(note)}</p>`);

  parts.push('<h2>Chosen plan, per layer</h2>');
  const hasSensitivity = report.layers.some((l) => l.sensitivity !== undefined);
  parts.push('<table id="layers"><thead><tr><th class="name">layer</th><th class="name">type</th><th>params</th><th>MACs</th><th>weight bits</th><th>activation bits</th>');
  for (const c of report.costs) parts.push(`<th>${e(c.label)}</th>`);
  if (hasSensitivity) parts.push('<th>sensitivity</th>');
  parts.push('</tr></thead><tbody>');
  for (const l of report.layers) {
    parts.push(`<tr><td class="name">${e(l.name)}</td><td class="name">${e(l.type)}</td><td>${l.params.toLocaleString('en-US')}</td><td>${l.macs.toLocaleString('en-US')}</td>` +
      `<td>${bitsCell(l.weightBits)}</td><td>${bitsCell(l.activationBits)}</td>`);
    for (const c of report.costs) {
      const v = l.costs?.[c.key];
      parts.push(`<td>${v === undefined ? '–' : e(formatSi(v, c.unit))}</td>`);
    }
    if (hasSensitivity) parts.push(`<td>${l.sensitivity === undefined ? '–' : e(l.sensitivity.toPrecision(3))}</td>`);
    parts.push('</tr>');
  }
  parts.push('</tbody></table>');

  const listed = report.points.filter((p) => p.kind !== 'evaluated');
  const primary = report.costs[0];
  if (listed.length > 0 && primary) {
    parts.push('<h2>Front and reference points</h2>');
    parts.push(`<table id="front"><thead><tr><th class="name">point</th><th>${e(metric.name)}</th>`);
    for (const c of report.costs) parts.push(`<th>${e(c.label)}</th>`);
    parts.push('<th class="name">bits per layer</th></tr></thead><tbody>');
    const sorted = [...listed].sort((a, b) => a.costs[primary.key]! - b.costs[primary.key]!);
    for (const p of sorted) {
      parts.push(`<tr class="${p.kind}"><td class="name">${e(p.label ?? p.kind)}</td><td>${e(metric.text(p.accuracy))}</td>`);
      for (const c of report.costs) parts.push(`<td>${e(formatSi(p.costs[c.key]!, c.unit))}</td>`);
      parts.push(`<td class="text"><code>${e(p.bits ?? '')}</code></td></tr>`);
    }
    parts.push('</tbody></table>');
  }
  parts.push('</body></html>');
  return `${parts.join('\n')}\n`;
}

/** Writes `text` to `path` atomically (temp file + rename), creating the directory. */
export function writeTextAtomic(path: string, text: string): void {
  makeParentDirs(path);
  writeFileAtomic(path, new TextEncoder().encode(text));
}

/** Renders and writes the HTML report atomically; returns the HTML. */
export function writeSearchReport(path: string, report: SearchReport): string {
  const html = renderReportHtml(report);
  writeTextAtomic(path, html);
  return html;
}
