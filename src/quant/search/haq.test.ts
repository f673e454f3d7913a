import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import '../../backend/index.ts';
import { Rng } from '../../tensor/random.ts';
import { NoAllocationFitsError } from './allocate.ts';
import { sizeCost, totalCost, uniformAssignment } from './costs.ts';
import { describeLayers } from './layers.ts';
import {
  actionToChoice, DdpgAgent, forceToBudget, haq, haqSearch, HaqActor, normalizeFeatures, ReplayBuffer, softUpdate, truncatedNormal,
  type Transition,
} from './haq.ts';
import { syntheticHaqProblem, trainedBlobMlp } from './testing.ts';

describe('actionToChoice', () => {
  it('gives every candidate an equal share of [0, 1]; 1 picks the widest', () => {
    assert.equal(actionToChoice(0, 4), 0);
    assert.equal(actionToChoice(0.2499, 4), 0);
    assert.equal(actionToChoice(0.25, 4), 1);
    assert.equal(actionToChoice(0.7499, 4), 2);
    assert.equal(actionToChoice(0.75, 4), 3);
    assert.equal(actionToChoice(1, 4), 3);
    assert.equal(actionToChoice(0.3, 1), 0);
    assert.throws(() => actionToChoice(1.01, 4), /\[0, 1\]/);
    assert.throws(() => actionToChoice(Number.NaN, 4), /\[0, 1\]/);
    assert.throws(() => actionToChoice(0.5, 0), /count/);
  });

  it("on contiguous widths equals HAQ's round(b_min − ½ + a·(b_max − b_min + 1)), clamped to b_max", () => {
    const bits = [2, 3, 4, 5, 6, 7, 8];
    const rng = new Rng(3);
    for (let i = 0; i < 2000; i++) {
      const a = i === 0 ? 1 : rng.uniform();
      const haqBits = Math.min(8, Math.round(2 - 0.5 + a * (8 - 2 + 1)));
      assert.equal(bits[actionToChoice(a, bits.length)], haqBits, `a = ${a}`);
    }
  });
});

describe('forceToBudget', () => {
  it('only lowers, one decision one step at a time from the last to the first, and stops as soon as the plan fits', () => {
    const rng = new Rng(11);
    for (let trial = 0; trial < 200; trial++) {
      const n = 1 + rng.int(6);
      const k = 1 + rng.int(5);
      // Arbitrary (not monotone) costs per decision and choice, as a noisy latency table can be.
      const table = Array.from({ length: n }, () => Array.from({ length: k }, () => rng.uniform() * 10));
      const cost = (plan: readonly number[]): number => plan.reduce((s, c, i) => s + table[i]![c]!, 0);
      const start = Array.from({ length: n }, () => rng.int(k));
      const lowest = cost(start.map(() => 0));
      const budget = lowest + rng.uniform() * Math.max(0, cost(start) - lowest) * 1.2;
      const checked: { plan: number[]; fits: boolean }[] = [];
      const result = forceToBudget(start, (plan) => {
        const fits = cost(plan) <= budget;
        checked.push({ plan: plan.slice(), fits });
        return fits;
      });
      assert.ok(result.fits, 'the narrowest plan fits, so the forced plan must');
      assert.ok(cost(result.plan) <= budget);
      result.plan.forEach((c, i) => assert.ok(c <= start[i]!, 'never raised'));
      assert.deepEqual(checked[0]!.plan, start);
      assert.deepEqual(checked[checked.length - 1]!.plan, result.plan);
      checked.slice(0, -1).forEach((c) => assert.equal(c.fits, false, 'checked again after it fitted'));
      // Each check lowers exactly one decision by one step, sweeping from the last decision to the first.
      let previousIndex = n;
      for (let j = 1; j < checked.length; j++) {
        const diff = checked[j]!.plan.map((c, i) => checked[j - 1]!.plan[i]! - c);
        const changed = diff.flatMap((d, i) => (d !== 0 ? [i] : []));
        assert.equal(changed.length, 1);
        assert.equal(diff[changed[0]!], 1);
        const i = changed[0]!;
        if (i >= previousIndex) {
          // A new sweep: the last one went on to decision 0 past choices at 0, this one started at the end.
          for (let m = 0; m < previousIndex; m++) assert.equal(checked[j - 1]!.plan[m], 0, 'a sweep ends only past choices at 0');
          for (let m = i + 1; m < n; m++) assert.equal(checked[j - 1]!.plan[m], 0, 'a new sweep skips only decisions at choice 0');
        } else {
          for (let m = i + 1; m < previousIndex; m++) assert.equal(checked[j - 1]!.plan[m], 0, 'a sweep skips only decisions at choice 0');
        }
        previousIndex = i;
      }
    }
  });

  it('returns the plan unchanged when it fits, and fits = false at all-zero when nothing fits', () => {
    assert.deepEqual(forceToBudget([2, 1], () => true), { plan: [2, 1], fits: true });
    assert.deepEqual(forceToBudget([2, 1], () => false), { plan: [0, 0], fits: false });
    // HAQ's order on a worked example: cost 10 per step, budget 45, from [3, 2, 2] (70): [3, 2, 1] (60), [3, 1, 1] (50), [2, 1, 1] (40 ≤ 45).
    const bits = (plan: readonly number[]) => plan.reduce((s, c) => s + 10 * c, 0);
    assert.deepEqual(forceToBudget([3, 2, 2], (p) => bits(p) <= 45).plan, [2, 1, 1]);
  });
});

describe('truncatedNormal', () => {
  it('stays in [lo, hi] and has the mean of the truncated density', () => {
    const rng = new Rng(5);
    for (const [mu, sigma] of [[0.9, 0.5], [0.2, 0.1], [1, 0.3]] as const) {
      const n = 20000;
      let sum = 0;
      let sumSq = 0;
      for (let i = 0; i < n; i++) {
        const x = truncatedNormal(rng, mu, sigma, 0, 1);
        assert.ok(x >= 0 && x <= 1);
        sum += x;
        sumSq += x * x;
      }
      // Mean of N(mu, sigma²) restricted to [0, 1], by Simpson's rule on the density.
      const steps = 2000;
      let mass = 0;
      let first = 0;
      for (let j = 0; j <= steps; j++) {
        const x = j / steps;
        const w = j === 0 || j === steps ? 1 : j % 2 ? 4 : 2;
        const d = Math.exp(-0.5 * ((x - mu) / sigma) ** 2);
        mass += w * d;
        first += w * x * d;
      }
      const expected = first / mass;
      const mean = sum / n;
      const se = Math.sqrt((sumSq / n - mean * mean) / n);
      assert.ok(Math.abs(mean - expected) < 4 * se, `mu ${mu} sigma ${sigma}: ${mean} vs ${expected} (se ${se})`);
    }
    assert.equal(truncatedNormal(rng, 1.4, 0, 0, 1), 1);
  });
});

function transition(reward: number, tag = 0): Transition {
  return { state: Float32Array.of(tag), action: 0.5, reward, next: Float32Array.of(tag), done: true };
}

describe('ReplayBuffer', () => {
  it('replaces the oldest transition once full', () => {
    const b = new ReplayBuffer(5);
    for (let i = 0; i < 7; i++) b.push(transition(i));
    assert.equal(b.size, 5);
    assert.deepEqual([0, 1, 2, 3, 4].map((i) => b.at(i).reward), [2, 3, 4, 5, 6]);
  });

  it('samples without replacement when it holds enough, with replacement otherwise, uniformly', () => {
    const rng = new Rng(9);
    const b = new ReplayBuffer(100);
    for (let i = 0; i < 10; i++) b.push(transition(i));
    for (let t = 0; t < 50; t++) assert.equal(new Set(b.sample(10, rng).map((x) => x.reward)).size, 10);
    const many = b.sample(25, rng);
    assert.equal(many.length, 25);
    assert.ok(many.every((x) => x.reward >= 0 && x.reward < 10));
    const counts = new Array<number>(10).fill(0);
    const draws = 20000;
    for (let t = 0; t < draws / 4; t++) for (const x of b.sample(4, rng)) counts[x.reward]!++;
    const expected = draws / 10;
    const chi2 = counts.reduce((s, c) => s + (c - expected) ** 2 / expected, 0);
    assert.ok(chi2 < 27.9, `chi² ${chi2} (9 degrees of freedom, 0.1 % level 27.9): ${counts.join(', ')}`);
    assert.throws(() => new ReplayBuffer(4).sample(2, rng), /empty/);
  });
});

describe('DDPG pieces', () => {
  it('softUpdate: θ′ ← (1 − τ)·θ′ + τ·θ element by element (float32), τ = 1 copies', () => {
    const target = new HaqActor(3, 8, new Rng(1));
    const source = new HaqActor(3, 8, new Rng(2));
    const before = target.parameters().map((p) => p.data.slice());
    softUpdate(target, source, 0.3);
    target.parameters().forEach((p, i) => {
      const src = source.parameters()[i]!.data;
      for (let k = 0; k < p.size; k++) assert.equal(p.data[k], Math.fround(0.7 * before[i]![k]! + 0.3 * src[k]!));
    });
    softUpdate(target, source, 1);
    target.parameters().forEach((p, i) => assert.deepEqual(p.data, source.parameters()[i]!.data));
    assert.throws(() => softUpdate(target, new HaqActor(4, 8, new Rng(1)), 0.5), /elements/);
  });

  it('the reward baseline is the moving average of batch means: b ← b + α·(mean − b)', () => {
    const agent = new DdpgAgent(1, { hidden: 4, batchSize: 4, bufferSize: 4, baselineAlpha: 0.5 });
    for (let i = 0; i < 4; i++) agent.buffer.push(transition(2));
    assert.equal(agent.update().baseline, 2);
    for (let i = 0; i < 4; i++) agent.buffer.push(transition(6));
    assert.equal(agent.update().baseline, 4);
    for (let i = 0; i < 4; i++) agent.buffer.push(transition(0));
    assert.equal(agent.update().baseline, 2);
  });

  it('the critic regresses onto a known target and the actor moves to the critic\'s argmax', () => {
    // One-step problems (done): r(s, a) = 1 − 4·(a − c(s))², c(s) = 0.2 + 0.6·s. The baseline is
    // frozen at the first batch mean (α = 0), so the critic's target is r − b exactly. A twin agent
    // with actor lr 0 draws the same batches: its critic ends identical (done transitions never
    // read the actor) and its actor is the initial one.
    const peak = (s: number): number => 0.2 + 0.6 * s;
    const reward = (s: number, a: number): number => 1 - 4 * (a - peak(s)) ** 2;
    const make = (actorLr: number) => new DdpgAgent(1, { hidden: 24, batchSize: 64, bufferSize: 2048, baselineAlpha: 0, criticLr: 3e-3, actorLr, seed: 4 });
    const agent = make(2e-3);
    const frozen = make(0);
    const rng = new Rng(8);
    for (let i = 0; i < 2048; i++) {
      const s = rng.uniform();
      const a = rng.uniform();
      for (const x of [agent, frozen]) x.buffer.push({ state: Float32Array.of(s), action: a, reward: reward(s, a), next: Float32Array.of(s), done: true });
    }
    for (let i = 0; i < 700; i++) {
      agent.update();
      frozen.update();
    }
    agent.critic.parameters().forEach((p, i) => assert.deepEqual(p.data, frozen.critic.parameters()[i]!.data));
    const grid = Array.from({ length: 41 }, (_, i) => i / 40);
    const states = [0.1, 0.3, 0.5, 0.7, 0.9];
    const b = agent.baseline!;
    let se = 0;
    let variance = 0;
    const mean = grid.reduce((m, a) => m + states.reduce((t, s) => t + reward(s, a), 0), 0) / (grid.length * states.length);
    for (const s of states) {
      for (const a of grid) {
        se += (agent.value(Float32Array.of(s), a) - (reward(s, a) - b)) ** 2;
        variance += (reward(s, a) - mean) ** 2;
      }
    }
    assert.ok(se / variance < 0.05, `critic: residual ${se / variance} of the target's variance`);
    const argmaxQ = (s: number): number => grid.reduce((best, a) => (agent.value(Float32Array.of(s), a) > agent.value(Float32Array.of(s), best) ? a : best), 0);
    for (const s of states) assert.ok(Math.abs(argmaxQ(s) - peak(s)) <= 0.1, `critic argmax at s = ${s}: ${argmaxQ(s)} vs ${peak(s)}`);
    const distance = (x: DdpgAgent): number => states.reduce((d, s) => d + Math.abs(x.policy(Float32Array.of(s)) - argmaxQ(s)), 0) / states.length;
    assert.ok(distance(agent) < 0.06, `actor: mean |μ(s) − argmax Q(s, ·)| = ${distance(agent)}`);
    assert.ok(distance(agent) < distance(frozen) / 2, `the actor moved from ${distance(frozen)} to ${distance(agent)}`);
  });
});

describe('normalizeFeatures', () => {
  it('maps each column to [0, 1] by min and max; a constant column to 0', () => {
    assert.deepEqual(normalizeFeatures([[1, 5, 2], [3, 5, 4], [2, 5, 8]]), [[0, 0, 0], [1, 0, 1 / 3], [0.5, 0, 1]]);
  });
});

describe('haq on a problem with a known optimum', () => {
  it('closes ≥ 95 % of the gap between uniform 3 bits and the exact optimum in 400 episodes, well ahead of 400 random plans, and learns', async () => {
    const { env, optimum, uniform, value } = syntheticHaqProblem();
    const result = await haq(env, { episodes: 400, hidden: 64, seed: 0 });
    const closed = (result.best.reward - uniform) / (optimum - uniform);
    assert.ok(result.best.reward <= optimum + 1e-12, 'nothing beats the exact optimum');
    // 0.994 on the native backend, 0.968 on the reference one: the agent's networks round
    // differently there, so its trajectory differs.
    assert.ok(closed >= 0.95, `gap closed ${closed} (best ${result.best.reward}, optimum ${optimum}, uniform ${uniform})`);
    // As many uniformly random plans, forced the same way, close 0.788 of it (0.79-0.94 over seeds 0-4).
    const rng = new Rng(99);
    let random = -Infinity;
    for (let e = 0; e < 400; e++) {
      const plan = env.decisions.map((d) => rng.int(d.choices));
      random = Math.max(random, value(forceToBudget(plan, (p) => env.costs(p)[0]! <= env.budgets[0]!).plan));
    }
    const randomClosed = (random - uniform) / (optimum - uniform);
    assert.ok(closed > randomClosed + 0.1, `agent ${closed} vs random plans ${randomClosed}`);
    assert.ok(result.history.every((e) => e.costs[0]! <= env.budgets[0]!), 'every forced plan within the budget');
    // Learning, not luck: the mean reward of the last 50 (still exploring) episodes has come most of
    // the way from the random warm-up's to the uniform plan's (here 0.91 of the way).
    const mean = (from: number, to: number): number => result.history.slice(from, to).reduce((s, e) => s + e.reward, 0) / (to - from);
    const progress = (mean(350, 400) - mean(0, 20)) / (uniform - mean(0, 20));
    assert.ok(progress > 0.85, `warm-up ${mean(0, 20)}, last 50 ${mean(350, 400)}, uniform ${uniform}: ${progress}`);
  });

  it('refuses a budget the narrowest plan exceeds', async () => {
    const { env } = syntheticHaqProblem();
    await assert.rejects(haq({ ...env, budgets: [1] }, { episodes: 2 }), NoAllocationFitsError);
  });
});

describe('haqSearch', () => {
  it('returns a plan within the budget, reproducibly, and a stop keeps the best so far', async () => {
    const { model, data } = trainedBlobMlp(0);
    const size = sizeCost();
    const described = describeLayers(model, [8]);
    const budget = totalCost(size, described, uniformAssignment(described, 3, 8));
    const run = (stopAfter?: number) => {
      let episodes = 0;
      return haqSearch(model, data, {
        budgets: [{ cost: size, value: budget }], wBits: [2, 3, 4, 8], episodes: 10, warmup: 4, hidden: 16, batchSize: 16, seed: 2,
        ...(stopAfter !== undefined ? { shouldStop: () => episodes >= stopAfter } : {}),
        onEpisode: () => void episodes++,
      });
    };
    const a = await run();
    const b = await run();
    assert.ok(a.chosen.costs['size']! <= budget);
    assert.ok(a.candidates.every((c) => c.uniform !== undefined || c.costs['size']! <= budget));
    assert.deepEqual(a.chosen.assignment, b.chosen.assignment);
    assert.deepEqual(a.history.map((e) => e.reward), b.history.map((e) => e.reward));
    assert.equal(a.episodes, 10);
    assert.equal(a.uniform.length, 4);
    for (const l of described) assert.ok([2, 3, 4, 8].includes(a.chosen.assignment[l.name]!.w));
    const best = Math.max(...a.candidates.filter((c) => c.uniform === undefined).map((c) => c.accuracy));
    assert.equal(a.chosen.accuracy, best);
    const stopped = await run(3);
    assert.equal(stopped.stopped, true);
    assert.equal(stopped.episodes, 3);
    assert.equal(stopped.uniform.length, 0);
    assert.deepEqual(stopped.history.map((e) => e.reward), a.history.slice(0, 3).map((e) => e.reward));
  });
});
