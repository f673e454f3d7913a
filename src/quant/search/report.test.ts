import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { escapeHtml, formatSi, frontOf, niceTicks, paretoSvg, renderReportHtml, writeSearchReport, type ReportPoint, type SearchReport } from './report.ts';

const cost = { key: 'size', label: 'model size', unit: 'B' } as const;

function p(size: number, accuracy: number, kind: ReportPoint['kind'] = 'front', label?: string): ReportPoint {
  return { accuracy, kind, label, costs: { size } };
}

/** [x, y] of every marker's centre of one kind, read back from the SVG text. */
function centres(svg: string, kind: string): [number, number][] {
  const out: [number, number][] = [];
  const re = new RegExp(`<g class="point ${kind}"><title>[^<]*</title><(circle|rect|polygon|path) ([^>]*)/>`, 'g');
  for (const m of svg.matchAll(re)) {
    const attr = (name: string) => Number(new RegExp(`${name}="([-\\d.]+)"`).exec(m[2]!)![1]);
    if (m[1] === 'circle') out.push([attr('cx'), attr('cy')]);
    else if (m[1] === 'rect') out.push([attr('x') + 5, attr('y') + 5]);
    else out.push([NaN, NaN]);
  }
  return out;
}

describe('report helpers', () => {
  it('formatSi picks the prefix and 3 significant digits', () => {
    assert.equal(formatSi(40960, 'B'), '41.0 kB');
    assert.equal(formatSi(999, 'B'), '999 B');
    assert.equal(formatSi(1.2e9, 'bitops'), '1.20 Gbitops');
    assert.equal(formatSi(0.0021, 's'), '2.10 ms');
    assert.equal(formatSi(0, 'J'), '0 J');
    assert.equal(formatSi(-1500, 'B'), '-1.50 kB');
    assert.equal(formatSi(9_999_700, 'bitops'), '10.0 Mbitops');
    assert.equal(formatSi(999_700, 'B'), '1.00 MB');
  });

  it('niceTicks gives round steps inside the range', () => {
    assert.deepEqual(niceTicks(0, 10, 5), [0, 2, 4, 6, 8, 10]);
    assert.deepEqual(niceTicks(13, 61, 5), [20, 30, 40, 50, 60]);
    assert.deepEqual(niceTicks(97.2, 99.3, 4), [97.5, 98, 98.5, 99]);
    assert.deepEqual(niceTicks(5, 5), [5]);
  });

  it('escapeHtml escapes markup characters', () => {
    assert.equal(escapeHtml(`<a href="x">&'`), '&lt;a href=&quot;x&quot;&gt;&amp;&#39;');
  });

  it('frontOf keeps the max-accuracy / min-cost points, sorted by cost', () => {
    const pts = [p(30, 0.98), p(10, 0.90), p(20, 0.97), p(25, 0.96), p(40, 0.98), p(20, 0.95)];
    assert.deepEqual(frontOf(pts, 'size').map((x) => [x.costs.size, x.accuracy]), [[10, 0.9], [20, 0.97], [30, 0.98]]);
  });
});

describe('paretoSvg', () => {
  it('maps cost to x and accuracy to y monotonically and marks every kind', () => {
    const pts = [p(10, 0.90), p(20, 0.97), p(30, 0.98), p(15, 0.5, 'uniform', 'W2'), p(35, 0.985, 'uniform', 'W8'), p(22, 0.975, 'chosen', 'plan'), p(25, 0.93, 'evaluated')];
    const svg = paretoSvg(pts, { ...cost, budget: 28 }, { minAccuracy: 0.85, floatAccuracy: 0.99 });
    assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    assert.match(svg, /<\/svg>$/);
    const front = centres(svg, 'front');
    assert.equal(front.length, 3);
    for (let i = 1; i < front.length; i++) {
      assert.ok(front[i]![0] > front[i - 1]![0], 'more cost → further right');
      assert.ok(front[i]![1] < front[i - 1]![1], 'more accuracy → higher (smaller y)');
    }
    assert.equal(centres(svg, 'uniform').length, 2);
    // W2 at 50 % lies under the 85 % floor: drawn as a ▼ path on the edge with its value.
    assert.equal((svg.match(/<g class="point uniform"><title>[^<]*<\/title><path /g) ?? []).length, 1);
    assert.match(svg, />W2 50.0%</);
    assert.match(svg, />W8</);
    assert.match(svg, /budget 28.0 B/);
    assert.match(svg, /float32 99.00%/);
    assert.equal((svg.match(/class="point chosen"/g) ?? []).length, 1);
    assert.equal((svg.match(/class="front-line"/g) ?? []).length, 1);
    // The staircase visits the 2-D front of all points: (10,.90) (15,.5)✗ (20,.97) (22,.975) (30,.98) (35,.985).
    const d = /class="front-line" d="([^"]+)"/.exec(svg)![1]!;
    assert.equal(d.split('V').length - 1, 4, `4 steps up in ${d}`);
  });

  it('escapes labels and handles a single point', () => {
    const svg = paretoSvg([p(10, 0.9, 'chosen', '<x>')], { key: 'size', label: 'a & b', unit: 'B' });
    assert.ok(svg.includes('&lt;x&gt;') && !svg.includes('<x>'));
    assert.ok(svg.includes('Accuracy vs a &amp; b'));
    assert.doesNotMatch(svg, /NaN|Infinity/);
  });
});

describe('HTML report', () => {
  const report: SearchReport = {
    title: 'search <report>',
    summary: [['model', 'lenet5'], ['budget', 'size <= 40 kB']],
    costs: [cost, { key: 'bitops', label: 'bit operations', unit: 'bitops' }],
    points: [
      { accuracy: 0.98, kind: 'front', costs: { size: 20_000, bitops: 1e8 }, bits: '8/4/3/4/8' },
      { accuracy: 0.99, kind: 'uniform', label: 'W8', costs: { size: 61_000, bitops: 2e8 }, bits: '8/8/8/8/8' },
      { accuracy: 0.97, kind: 'evaluated', costs: { size: 30_000, bitops: 1.5e8 } },
    ],
    layers: [
      { name: 'conv1', type: 'Conv2d', params: 156, macs: 117_600, weightBits: 8, activationBits: 8, costs: { size: 156 } },
      { name: 'fc<1>', type: 'Linear', params: 48_120, macs: 48_000, weightBits: 3, activationBits: null },
    ],
  };

  it('is one self-contained page with a plot per cost and the tables', () => {
    const html = renderReportHtml(report);
    assert.match(html, /^<!DOCTYPE html>/);
    assert.equal((html.match(/<svg /g) ?? []).length, 2);
    assert.ok(html.includes('id="pareto-size"') && html.includes('id="pareto-bitops"'));
    assert.doesNotMatch(html, /<script|src="http|href="http/);
    const layerBody = /<table id="layers">[\s\S]*?<tbody>([\s\S]*?)<\/tbody>/.exec(html)![1]!;
    assert.equal((layerBody.match(/<tr>/g) ?? []).length, 2);
    assert.ok(layerBody.includes('fc&lt;1&gt;'));
    assert.ok(layerBody.includes('<td>float</td>'), 'float activations say so');
    assert.ok(layerBody.includes('48,120'));
    const frontBody = /<table id="front">[\s\S]*?<tbody>([\s\S]*?)<\/tbody>/.exec(html)![1]!;
    assert.equal((frontBody.match(/<tr /g) ?? []).length, 2, 'front and uniform rows, not the merely evaluated one');
    assert.ok(html.includes('<title>search &lt;report&gt;</title>'));
  });

  it('is written atomically (no temporary file left behind)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'lowbit-report-unit-'));
    try {
      const path = join(dir, 'sub', 'report.html');
      const html = writeSearchReport(path, report);
      assert.equal(readFileSync(path, 'utf8'), html);
      assert.deepEqual(readdirSync(join(dir, 'sub')), ['report.html']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
