/**
 * End-to-end: the HTML report of a mixed-precision search opens in a real headless Chromium
 * without console or page errors, shows one Pareto plot per cost with its markers, and the
 * per-layer and front tables with the expected rows. A screenshot is saved (to
 * $LOWBIT_SCREENSHOT_DIR when set, else a temporary directory). Skips when Chromium is missing.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeSearchReport, type ReportPoint, type SearchReport } from '../src/quant/search/report.ts';
import { nsga2Search, chooseWithinBudget } from '../src/quant/search/mohaq.ts';
import { writeSearchOutputs } from '../src/quant/search/outcome.ts';
import { bitOpsCost, sizeCost } from '../src/quant/search/costs.ts';
import { trainedBlobMlp } from '../src/quant/search/testing.ts';
import { chromiumUnavailable, withChromiumPage } from './chromium.ts';

/** A report shaped like LeNet-5's: 5 layers, uniform W2..W8 points, a front, a chosen plan. */
function sampleReport(): SearchReport {
  const params = [150, 2400, 48000, 10080, 840];
  const size = (bits: readonly number[]) => bits.reduce((s, b, i) => s + (params[i]! * b) / 8, 0);
  const bitops = (bits: readonly number[]) => bits.reduce((s, b, i) => s + params[i]! * 50 * b * 8, 0);
  const point = (bits: number[], accuracy: number, kind: ReportPoint['kind'], label?: string): ReportPoint => ({
    accuracy, kind, label, bits: bits.join('/'), costs: { size: size(bits), bitops: bitops(bits) },
  });
  const points: ReportPoint[] = [
    point([2, 2, 2, 2, 2], 0.4212, 'uniform', 'W2'),
    point([3, 3, 3, 3, 3], 0.9701, 'uniform', 'W3'),
    point([4, 4, 4, 4, 4], 0.9874, 'uniform', 'W4'),
    point([8, 8, 8, 8, 8], 0.9902, 'uniform', 'W8'),
    point([8, 4, 2, 3, 8], 0.9731, 'front'),
    point([8, 4, 3, 3, 8], 0.9866, 'front'),
    point([8, 8, 3, 4, 8], 0.9889, 'chosen', 'plan'),
    point([4, 3, 2, 2, 4], 0.9311, 'evaluated'),
    point([8, 8, 4, 4, 8], 0.9893, 'beacon'),
  ];
  return {
    title: 'lowbit search: lenet5 on mnist <nsga2>',
    summary: [['model', 'runs/lenet5-mnist'], ['method', 'nsga2 + beacons'], ['budget', 'size <= 40 kB']],
    costs: [{ key: 'size', label: 'model size', unit: 'B', budget: 40_000 }, { key: 'bitops', label: 'bit operations', unit: 'bitops' }],
    points,
    floatAccuracy: 0.9911,
    minAccuracy: 0.9,
    layers: ['conv1', 'conv2', 'fc1', 'fc2', 'fc3'].map((name, i) => ({
      name, type: name.startsWith('conv') ? 'Conv2d' : 'Linear', params: params[i]!, macs: params[i]! * 50,
      weightBits: [8, 8, 3, 4, 8][i]!, activationBits: 8, costs: { size: (params[i]! * [8, 8, 3, 4, 8][i]!) / 8 }, sensitivity: [0.5, 0.1, 0.02, 0.04, 0.3][i],
    })),
    notes: ['accuracy: PTQ on 1000 test images, beacon-corrected'],
  };
}

describe('search report in headless Chromium', () => {
  it('renders without errors and shows the plots and tables', async (t) => {
    const why = await chromiumUnavailable();
    if (why) {
      t.skip(`Chromium not available: ${why}`);
      return;
    }
    const dir = mkdtempSync(join(tmpdir(), 'lowbit-report-'));
    try {
      const report = sampleReport();
      writeSearchReport(join(dir, 'report.html'), report);
      const shotDir = process.env.LOWBIT_SCREENSHOT_DIR ?? dir;
      mkdirSync(shotDir, { recursive: true });
      const shot = join(shotDir, 'search-report.png');
      const { value, problems } = await withChromiumPage(dir, 'report.html', async (page) => {
        const svgs = await page.$$eval('svg.pareto', (els) => els.map((el) => {
          const box = el.getBoundingClientRect();
          return {
            id: el.id, width: box.width, height: box.height,
            uniform: el.querySelectorAll('g.point.uniform').length,
            front: el.querySelectorAll('g.point.front').length,
            chosen: el.querySelectorAll('g.point.chosen').length,
            frontLine: el.querySelectorAll('path.front-line').length,
            // Rendered geometry of the uniform markers: inside the SVG box.
            inside: [...el.querySelectorAll('g.point rect, g.point circle, g.point polygon, g.point path')].every((m) => {
              const b = m.getBoundingClientRect();
              return b.width > 0 && b.left >= box.left - 1 && b.right <= box.right + 1 && b.top >= box.top - 1 && b.bottom <= box.bottom + 1;
            }),
          };
        }));
        const layerRows = await page.$$eval('#layers tbody tr', (rows) => rows.map((r) => [...r.querySelectorAll('td')].map((td) => td.textContent?.trim() ?? '')));
        const frontRows = await page.$$eval('#front tbody tr', (rows) => rows.map((r) => r.className));
        const title = await page.title();
        await page.screenshot({ path: shot, fullPage: true });
        return { svgs, layerRows, frontRows, title };
      });
      assert.deepEqual(problems.errors, [], 'no console or page errors');
      assert.deepEqual(problems.failedRequests, [], 'no failed requests');
      assert.equal(value.title, 'lowbit search: lenet5 on mnist <nsga2>', 'the title is escaped text, not markup');
      assert.deepEqual(value.svgs.map((s) => s.id), ['pareto-size', 'pareto-bitops']);
      for (const svg of value.svgs) {
        assert.ok(svg.width >= 500 && svg.height >= 300, `${svg.id} is laid out (${svg.width}x${svg.height})`);
        assert.equal(svg.uniform, 4, `${svg.id}: the four uniform points`);
        assert.equal(svg.front, 2);
        assert.equal(svg.chosen, 1);
        assert.equal(svg.frontLine, 1);
        assert.ok(svg.inside, `${svg.id}: every marker inside the plot`);
      }
      assert.deepEqual(value.layerRows.map((r) => r[0]), ['conv1', 'conv2', 'fc1', 'fc2', 'fc3']);
      assert.deepEqual(value.layerRows.map((r) => r[4]), ['8', '8', '3', '4', '8'], 'weight bits column');
      assert.equal(value.layerRows[2]![2], '48,000', 'params column');
      assert.equal(value.frontRows.length, 8, 'every non-"evaluated" point is listed');
      assert.equal(value.frontRows.filter((c) => c === 'uniform').length, 4);
      assert.ok(statSync(shot).size > 10_000, 'a screenshot was written');
      assert.deepEqual([...readFileSync(shot).subarray(1, 4)], [0x50, 0x4e, 0x47], 'PNG signature');
      t.diagnostic(`screenshot: ${shot}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('renders the report of a real (small) NSGA-II search', async (t) => {
    const why = await chromiumUnavailable();
    if (why) {
      t.skip(`Chromium not available: ${why}`);
      return;
    }
    const dir = mkdtempSync(join(tmpdir(), 'lowbit-report-real-'));
    try {
      const { model, data } = trainedBlobMlp(6, 80);
      const costs = [sizeCost(), bitOpsCost()];
      const result = await nsga2Search(model, data, { costs, wBits: [2, 4, 8], populationSize: 6, generations: 2, beacons: { maxBeacons: 1, qatSteps: 5, every: 1 }, evaluation: { calibrationSamples: 64 } });
      const budget = result.uniform.find((u) => u.uniform === 'W4A8')!.costs.size!;
      const chosen = chooseWithinBudget(result.front, 'size', budget);
      writeSearchOutputs(dir, {
        method: 'nsga2', title: 'blob MLP', summary: [['model', 'blob MLP']], layers: result.layers, costs,
        budget: { cost: 'size', value: budget, text: 'size=W4' }, candidates: result.candidates, front: result.front, chosen,
      });
      const { value, problems } = await withChromiumPage(dir, 'report.html', async (page) => ({
        plots: await page.$$eval('svg.pareto', (els) => els.map((el) => el.querySelectorAll('g.point').length)),
        layers: await page.$$eval('#layers tbody tr', (rows) => rows.map((r) => r.querySelector('td')?.textContent)),
      }));
      assert.deepEqual(problems, { errors: [], failedRequests: [] });
      assert.deepEqual(value.plots, [result.candidates.length, result.candidates.length], 'every candidate is drawn on both plots');
      assert.deepEqual(value.layers, ['0', '2', '4']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
