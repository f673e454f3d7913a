/**
 * A progress line for long loops (training epochs, calibration, search).
 *
 * On a TTY it redraws one line in place (`\r`), at most ~10 times a second:
 *   `epoch 1/3  312/938 [######.........]  loss 0.2143  acc 93.41%  5321 samples/s  ETA 0:12`
 * Elsewhere (CI logs, pipes) it prints a plain line at most once per ~10 % of the total, and only
 * when some seconds have passed since the previous one, so that logs stay short. Writes go to
 * stderr unless another stream is given.
 */

/** Where the bar writes: a stream with `write`, and `isTTY` / `columns` when it is a terminal. */
export interface ProgressStream {
  write(chunk: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export interface ProgressBarOptions {
  /** Number of ticks that make 100 % (e.g. steps per epoch); 0 when unknown (no bar, no ETA). */
  total: number;
  /** Shown first, e.g. `epoch 2/5` or `calibrate`. */
  label?: string;
  /** Unit of the rate display (default `it`); ticks may count a different number of items. */
  rateUnit?: string;
  /** Default: process.stderr. */
  stream?: ProgressStream;
  /** Force TTY / non-TTY rendering (default: `stream.isTTY`). */
  tty?: boolean;
  /** Minimum milliseconds between redraws on a TTY (default 100). */
  minIntervalMs?: number;
  /** Minimum milliseconds between lines when not on a TTY (default 5000). */
  minLogIntervalMs?: number;
  /** Clock in milliseconds (tests inject one). */
  now?: () => number;
}

/** Metric values shown after the bar; numbers are printed with 4 significant digits. */
export type ProgressMetrics = Record<string, number | string>;

const BAR_WIDTH = 24;

export class ProgressBar {
  readonly total: number;
  readonly label: string;
  private readonly rateUnit: string;
  private readonly stream: ProgressStream;
  private readonly tty: boolean;
  private readonly minIntervalMs: number;
  private readonly minLogIntervalMs: number;
  private readonly now: () => number;
  private readonly start: number;
  private current = 0;
  private items = 0;
  private metrics: ProgressMetrics = {};
  private lastDraw = -Infinity;
  private lastLog: number;
  private nextLogFraction = 0.1;
  private drawnLength = 0;
  private finished = false;

  constructor(options: ProgressBarOptions) {
    if (!(options.total >= 0)) throw new Error(`ProgressBar: total must be >= 0, got ${options.total}`);
    this.total = options.total;
    this.label = options.label ?? '';
    this.rateUnit = options.rateUnit ?? 'it';
    this.stream = options.stream ?? process.stderr;
    this.tty = options.tty ?? this.stream.isTTY === true;
    this.minIntervalMs = options.minIntervalMs ?? 100;
    this.minLogIntervalMs = options.minLogIntervalMs ?? 5000;
    this.now = options.now ?? (() => performance.now());
    this.start = this.now();
    this.lastLog = this.start;
  }

  /** Advances by `n` ticks covering `items` items (default `n`), updating the shown metrics. */
  tick(n = 1, metrics?: ProgressMetrics, items = n): void {
    if (this.finished) return;
    this.current = this.total > 0 ? Math.min(this.total, this.current + n) : this.current + n;
    this.items += items;
    if (metrics) this.metrics = metrics;
    const t = this.now();
    const complete = this.total > 0 && this.current >= this.total;
    if (this.tty) {
      if (complete || t - this.lastDraw >= this.minIntervalMs) {
        this.lastDraw = t;
        this.draw(this.render(t));
      }
    } else if (this.total > 0) {
      const fraction = this.current / this.total;
      if (fraction >= this.nextLogFraction && !complete) {
        while (this.nextLogFraction <= fraction) this.nextLogFraction += 0.1;
        if (t - this.lastLog >= this.minLogIntervalMs) {
          this.lastLog = t;
          this.stream.write(`${this.render(t)}\n`);
        }
      }
    }
  }

  /** Ends the bar: clears the line on a TTY, then prints `message` (if any) on a line of its own. */
  done(message?: string): void {
    if (this.finished) return;
    this.finished = true;
    if (this.tty && this.drawnLength > 0) this.stream.write(`\r${' '.repeat(this.drawnLength)}\r`);
    if (message !== undefined) this.stream.write(`${message}\n`);
  }

  /** Seconds since the bar was created. */
  elapsedSeconds(): number {
    return (this.now() - this.start) / 1000;
  }

  /** The current line, without control characters. */
  render(t = this.now()): string {
    const elapsed = Math.max(1e-9, (t - this.start) / 1000);
    const parts: string[] = [];
    if (this.label) parts.push(this.label);
    if (this.total > 0) {
      const width = String(this.total).length;
      parts.push(`${String(this.current).padStart(width)}/${this.total}`);
      const filled = Math.round((this.current / this.total) * BAR_WIDTH);
      parts.push(`[${'#'.repeat(filled)}${'.'.repeat(BAR_WIDTH - filled)}]`);
    } else {
      parts.push(String(this.current));
    }
    for (const [name, value] of Object.entries(this.metrics)) parts.push(`${name} ${formatMetric(value)}`);
    const rate = this.items / elapsed;
    parts.push(`${formatRate(rate)} ${this.rateUnit}/s`);
    if (this.total > 0 && this.current < this.total && this.current > 0) {
      parts.push(`ETA ${formatDuration(((this.total - this.current) * elapsed) / this.current)}`);
    } else {
      parts.push(formatDuration(elapsed));
    }
    return parts.join('  ');
  }

  private draw(line: string): void {
    const columns = this.stream.columns ?? 0;
    const shown = columns > 1 && line.length >= columns ? line.slice(0, columns - 1) : line;
    const pad = Math.max(0, this.drawnLength - shown.length);
    this.stream.write(`\r${shown}${' '.repeat(pad)}`);
    this.drawnLength = shown.length;
  }
}

function formatMetric(value: number | string): string {
  if (typeof value === 'string') return value;
  if (!Number.isFinite(value)) return String(value);
  return Math.abs(value) >= 1e4 ? value.toFixed(0) : value.toPrecision(4);
}

function formatRate(rate: number): string {
  return rate >= 100 ? rate.toFixed(0) : rate.toPrecision(3);
}

/** `m:ss`, or `h:mm:ss` past an hour. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`;
}
