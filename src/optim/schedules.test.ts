import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tensor } from '../tensor/index.ts';
import { SGD } from './sgd.ts';
import { CosineAnnealingLR, LinearWarmupLR, MultiStepLR, OneCycleLR, StepLR, type LRScheduler } from './schedules.ts';

function sgd(lr: number, groups = 1): SGD {
  return new SGD(Array.from({ length: groups }, (_, i) => ({ params: [tensor([0]).requiresGrad_()], lr: lr * (i + 1) })));
}

/** The LR at construction followed by the LR after each of `steps` steps. */
function sequence(s: LRScheduler, steps: number): number[] {
  const out = [s.getLr()[0]!];
  for (let i = 0; i < steps; i++) {
    s.step();
    out.push(s.getLr()[0]!);
  }
  return out;
}

function close(actual: readonly number[], expected: readonly number[]): void {
  assert.equal(actual.length, expected.length);
  expected.forEach((e, i) => assert.ok(Math.abs(actual[i]! - e) <= 1e-12 + 1e-9 * Math.abs(e), `[${i}] ${actual[i]} vs ${e}`));
}

test('StepLR decays by gamma every stepSize steps', () => {
  close(sequence(new StepLR(sgd(1), { stepSize: 2, gamma: 0.5 }), 6), [1, 1, 0.5, 0.5, 0.25, 0.25, 0.125]);
});

test('MultiStepLR decays at milestones, per group', () => {
  const opt = sgd(0.1, 2);
  const s = new MultiStepLR(opt, { milestones: [3, 1], gamma: 0.1 });
  close(sequence(s, 4), [0.1, 0.01, 0.01, 0.001, 0.001]);
  close(s.getLr(), [0.001, 0.002]);
});

test('CosineAnnealingLR follows etaMin + (base − etaMin)(1 + cos(πt/T))/2', () => {
  const s = new CosineAnnealingLR(sgd(1), { tMax: 4, etaMin: 0.1 });
  const c = (t: number): number => 0.1 + 0.9 * (1 + Math.cos((Math.PI * t) / 4)) / 2;
  close(sequence(s, 4), [1, c(1), 0.55, c(3), 0.1]);
});

test('LinearWarmupLR ramps (t+1)/(W+1), then hands over to the inner schedule', () => {
  const opt = sgd(1);
  const after = new CosineAnnealingLR(opt, { tMax: 2 });
  const s = new LinearWarmupLR(opt, { warmupSteps: 3, after });
  close(sequence(s, 6), [0.25, 0.5, 0.75, 1, 0.5, 0, 0.5]);
  close(sequence(new LinearWarmupLR(sgd(2), { warmupSteps: 2, startFactor: 0 }), 3), [0, 1, 2, 2]);
  assert.throws(() => new LinearWarmupLR(sgd(1), { warmupSteps: 2, after: new StepLR(sgd(1), { stepSize: 1 }) }), /same optimizer/);
});

test('OneCycleLR: up from maxLr/25 to maxLr, then down to maxLr/25e4 (PyTorch phases)', () => {
  const opt = sgd(123);
  const s = new OneCycleLR(opt, { maxLr: 1, totalSteps: 10, pctStart: 0.3 });
  const cos = (start: number, end: number, pct: number): number => end + ((start - end) / 2) * (Math.cos(Math.PI * pct) + 1);
  const initial = 1 / 25;
  const final = initial / 1e4;
  const expected = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9].map((t) => (t <= 2 ? cos(initial, 1, t / 2) : cos(1, final, (t - 2) / 7)));
  close(sequence(s, 9), expected);
  // As PyTorch: the totalSteps-th step() is allowed (the annealing formula continued), the next throws.
  s.step();
  close(s.getLr(), [cos(1, final, 8 / 7)]);
  assert.throws(() => s.step(), /step 11 is past totalSteps 10/);
  const linear = new OneCycleLR(sgd(1), { maxLr: 1, totalSteps: 5, pctStart: 0.4, annealStrategy: 'linear', divFactor: 10, finalDivFactor: 1 });
  close(sequence(linear, 4), [0.1, 1, 0.7, 0.4, 0.1]);
});

test('OneCycleLR allows exactly totalSteps step() calls, like PyTorch (values from torch 1.13)', () => {
  // torch.optim.lr_scheduler.OneCycleLR(SGD(lr=0.1), max_lr=1, total_steps=6): the initial LR, then after each of 6 steps;
  // a 7th step raises.
  const s = new OneCycleLR(sgd(0.1), { maxLr: 1, totalSteps: 6 });
  const torch = [0.04, 0.9944154354509117, 0.811745653949763, 0.46263710266697505, 0.1334775301888306, 4e-6, 0.13347753018883055];
  close(sequence(s, 6), torch);
  assert.throws(() => s.step(), /past totalSteps 6/);
});

test('scheduler stateDict restores the step and the LR', () => {
  const opt = sgd(1);
  const s = new StepLR(opt, { stepSize: 1, gamma: 0.5 });
  s.step();
  s.step();
  const saved = s.stateDict();
  const opt2 = sgd(1);
  const s2 = new StepLR(opt2, { stepSize: 1, gamma: 0.5 });
  s2.loadStateDict(saved);
  assert.equal(opt2.lr, 0.25);
  s2.step();
  assert.equal(opt2.lr, 0.125);
});
