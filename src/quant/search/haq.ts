/**
 * HAQ (Wang, Liu, Lin, Lin, Han, CVPR 2019, "HAQ: Hardware-Aware Automated Quantization with
 * Mixed Precision"): a DDPG agent (deep deterministic policy gradient) chooses the bit widths of a
 * network one decision at a time — each layer's weight width, then (when several activation
 * widths are candidates) its input-activation width — under a budget on a hardware cost.
 *
 * Episode: the agent walks the decisions t = 0..T−1 in forward order. State s_t = the decision's
 * static layer features (layer index, conv/linear, in and out channels, kernel, stride, weight
 * count, input feature-map size; each min–max normalised over the decisions) plus
 * whether it is a weight or an activation decision and the previous action. The actor outputs
 * a_t = μ(s_t) ∈ [0, 1] (sigmoid), perturbed by a normal of std σ truncated to [0, 1]; the action
 * picks candidate ⌊a·K⌋ of the decision's K ordered widths (HAQ's round(b_min − ½ + a·(b_max −
 * b_min + 1)) on the candidate list: equal-width bins). After the last decision the plan is forced
 * under the budget(s) by lowering widths: sweeps from the last decision to the first, each one
 * step lower, the cost checked after every step (HAQ's "action wall"); only lowering, so the plan
 * ends at the narrowest widths at worst, which must fit (checked before the search). The forced
 * plan is evaluated (PTQ accuracy by default, see `haqSearch`) and the episode's reward
 * R = λ·(acc − acc_float) (accuracy in percent, λ = 0.1 as HAQ) is given to every transition of
 * the episode.
 *
 * DDPG: actor μ and critic Q(s, a) = MLP(relu(W_s·s + W_a·a)) with target copies; transitions
 * (s, a, R, s', done) in a replay buffer; per update a minibatch, rewards minus a moving-average
 * baseline b ← b + α·(mean R_batch − b); critic regression to y = (R − b) + γ·(1 − done)·Q'(s',
 * μ'(s')) (mean squared error, Adam), actor ascent on Q(s, μ(s)) (Adam), then soft target updates
 * θ' ← (1 − τ)·θ' + τ·θ. The first `warmup` episodes act uniformly at random; afterwards σ decays
 * as σ₀·decay^(episode − warmup). Defaults follow the HAQ code: hidden 300, actor lr 1e-4, critic
 * lr 1e-3, τ = 0.01, γ = 1, batch 64, 20 warm-up episodes, σ₀ = 0.5, α = 0.5, one update per
 * transition after each episode, a buffer of 128 transitions per decision; σ decay: below.
 *
 * Two departures from the HAQ code, both measured on the synthetic problem of haq.test.ts (eight
 * layers, six widths, accuracy = a sum of known per-layer terms, size budget of uniform 3 bits,
 * 400 episodes, seeds 0–4; mean share of the gap between uniform 3 bits and the exact optimum
 * closed by the best plan; `node --import tsx bench/search/haq.ts --synthetic`): the transitions
 * store what was carried out — a decision the forcing lowered is stored at the centre of the bin
 * it ended in (`credit: 'forced'`; the HAQ code stores the proposed action, and its actor learns
 * to propose wide widths everywhere, which the forcing flattens towards a uniform plan) — and σ
 * decays by 0.995 per episode (0.99 leaves little exploration after 300 episodes): 0.97 of the
 * gap closed, against 0.92 storing the proposed actions, 0.88 with σ decay 0.99, 0.80 with both
 * as the HAQ code, and 0.85 for 400 uniformly random plans forced the same way.
 *
 * The result is the best forced plan seen (highest reward, then cheapest); a `shouldStop` poll
 * between episodes ends the search early with the best so far. Everything is seeded.
 */
import { noGrad } from '../../autograd/engine.ts';
import { Linear } from '../../nn/linear.ts';
import { Module, type TensorModule } from '../../nn/module.ts';
import { Adam } from '../../optim/adam.ts';
import { add, mean, mseLoss, neg, relu, sigmoid } from '../../tensor/ops.ts';
import { Rng } from '../../tensor/random.ts';
import { Tensor } from '../../tensor/tensor.ts';
import { evaluate as evaluateModel } from '../../train/fit.ts';
import { NoAllocationFitsError } from './allocate.ts';
import { layerChoiceCost } from './costs.ts';
import { evaluateAssignmentSync, type EvaluateAssignmentOptions, type SearchData } from './evaluate.ts';
import { describeLayers } from './layers.ts';
import { assignmentCosts, candidateFront, uniformLabel, type SearchCandidate } from './mohaq.ts';
import type { BitAssignment, BitChoice, CostModel, LayerInfo } from './types.ts';

// ------------------------------------------------------------------ pieces

/**
 * The candidate index an action selects: ⌊action·count⌋, clamped to count − 1 (action 1 picks the
 * widest); [i/K, (i+1)/K) selects i, so every candidate gets the same share of [0, 1].
 */
export function actionToChoice(action: number, count: number): number {
  if (!Number.isInteger(count) || count < 1) throw new Error(`actionToChoice: count must be a positive integer, got ${count}`);
  if (!(action >= 0 && action <= 1)) throw new Error(`actionToChoice: action must be in [0, 1], got ${action}`);
  return Math.min(count - 1, Math.floor(action * count));
}

/**
 * A draw of N(mean, sigma²) truncated to [lo, hi] (rejection sampling; after 1,000 rejections —
 * only when almost no mass lies in the interval — the mean clamped into it). sigma 0 returns the
 * clamped mean.
 */
export function truncatedNormal(rng: Rng, mu: number, sigma: number, lo = 0, hi = 1): number {
  if (!(hi > lo)) throw new Error(`truncatedNormal: need lo < hi, got [${lo}, ${hi}]`);
  if (!(sigma >= 0)) throw new Error(`truncatedNormal: sigma must be >= 0, got ${sigma}`);
  const clamped = Math.min(hi, Math.max(lo, mu));
  if (sigma === 0) return clamped;
  for (let i = 0; i < 1000; i++) {
    const x = mu + sigma * rng.normal();
    if (x >= lo && x <= hi) return x;
  }
  return clamped;
}

/**
 * Forces a plan under its budget by lowering choices (HAQ's action wall): sweeps from the last
 * decision to the first, moving each decision above its lowest choice one step down and checking
 * `fits` after every step; stops as soon as the plan fits. Never raises a choice. Returns the
 * plan (a copy) and whether it fits (false only when every decision is at choice 0 and the plan
 * still does not fit).
 */
export function forceToBudget(plan: readonly number[], fits: (plan: readonly number[]) => boolean): { plan: number[]; fits: boolean } {
  const current = plan.slice();
  current.forEach((c, i) => {
    if (!Number.isInteger(c) || c < 0) throw new Error(`forceToBudget: plan[${i}] must be a non-negative integer, got ${c}`);
  });
  if (fits(current)) return { plan: current, fits: true };
  for (;;) {
    let lowered = false;
    for (let i = current.length - 1; i >= 0; i--) {
      if (current[i]! === 0) continue;
      current[i]!--;
      lowered = true;
      if (fits(current)) return { plan: current, fits: true };
    }
    if (!lowered) return { plan: current, fits: false };
  }
}

/** One transition of the replay buffer. */
export interface Transition {
  readonly state: Float32Array;
  readonly action: number;
  readonly reward: number;
  /** The next state (ignored when `done`). */
  readonly next: Float32Array;
  readonly done: boolean;
}

/** A ring buffer of transitions: the oldest is replaced once `capacity` is reached. */
export class ReplayBuffer {
  readonly capacity: number;
  private readonly items: Transition[] = [];
  private start = 0;

  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new Error(`ReplayBuffer: capacity must be a positive integer, got ${capacity}`);
    this.capacity = capacity;
  }

  get size(): number {
    return this.items.length;
  }

  push(t: Transition): void {
    if (this.items.length < this.capacity) this.items.push(t);
    else {
      this.items[this.start] = t;
      this.start = (this.start + 1) % this.capacity;
    }
  }

  /** The i-th oldest transition held. */
  at(i: number): Transition {
    if (!Number.isInteger(i) || i < 0 || i >= this.items.length) throw new Error(`ReplayBuffer.at: index ${i} outside [0, ${this.items.length})`);
    return this.items[(this.start + i) % this.items.length]!;
  }

  /**
   * `count` transitions drawn uniformly: without replacement when the buffer holds at least
   * `count` (a partial Fisher–Yates shuffle), with replacement otherwise.
   */
  sample(count: number, rng: Rng): Transition[] {
    const n = this.items.length;
    if (n === 0) throw new Error('ReplayBuffer.sample: the buffer is empty');
    if (!Number.isInteger(count) || count < 1) throw new Error(`ReplayBuffer.sample: count must be a positive integer, got ${count}`);
    if (n < count) return Array.from({ length: count }, () => this.items[rng.int(n)]!);
    const index = Array.from({ length: n }, (_, i) => i);
    const out: Transition[] = [];
    for (let i = 0; i < count; i++) {
      const j = i + rng.int(n - i);
      [index[i], index[j]] = [index[j]!, index[i]!];
      out.push(this.items[index[i]!]!);
    }
    return out;
  }
}

/** θ_target ← (1 − τ)·θ_target + τ·θ_source for every parameter (same architecture). */
export function softUpdate(target: Module, source: Module, tau: number): void {
  if (!(tau >= 0 && tau <= 1)) throw new Error(`softUpdate: tau must be in [0, 1], got ${tau}`);
  const t = target.parameters();
  const s = source.parameters();
  if (t.length !== s.length) throw new Error(`softUpdate: ${t.length} target parameters vs ${s.length} source parameters`);
  t.forEach((p, i) => {
    const q = s[i]!;
    if (p.size !== q.size) throw new Error(`softUpdate: parameter ${i} has ${p.size} vs ${q.size} elements`);
    const pd = p.data;
    const qd = q.data;
    for (let k = 0; k < pd.length; k++) pd[k] = (1 - tau) * pd[k]! + tau * qd[k]!;
  });
}

/** The policy μ(s) = sigmoid(L₃ relu(L₂ relu(L₁ s))) ∈ [0, 1]: states [B, S] → actions [B, 1]. */
export class HaqActor extends Module implements TensorModule {
  readonly fc1: Linear;
  readonly fc2: Linear;
  readonly fc3: Linear;

  constructor(stateSize: number, hidden: number, rng: Rng) {
    super();
    this.fc1 = this.registerModule('fc1', new Linear(stateSize, hidden, { rng }));
    this.fc2 = this.registerModule('fc2', new Linear(hidden, hidden, { rng }));
    this.fc3 = this.registerModule('fc3', new Linear(hidden, 1, { rng }));
  }

  forward(state: Tensor): Tensor {
    return sigmoid(this.fc3.forward(relu(this.fc2.forward(relu(this.fc1.forward(state))))));
  }
}

/** The action value Q(s, a) = L₃ relu(L₂ relu(L_s s + L_a a)): states [B, S], actions [B, 1] → [B, 1]. */
export class HaqCritic extends Module {
  readonly fcState: Linear;
  readonly fcAction: Linear;
  readonly fc2: Linear;
  readonly fc3: Linear;

  constructor(stateSize: number, hidden: number, rng: Rng) {
    super();
    this.fcState = this.registerModule('fcState', new Linear(stateSize, hidden, { rng }));
    this.fcAction = this.registerModule('fcAction', new Linear(1, hidden, { rng }));
    this.fc2 = this.registerModule('fc2', new Linear(hidden, hidden, { rng }));
    this.fc3 = this.registerModule('fc3', new Linear(hidden, 1, { rng }));
  }

  forward(state: Tensor, action: Tensor): Tensor {
    return this.fc3.forward(relu(this.fc2.forward(relu(add(this.fcState.forward(state), this.fcAction.forward(action))))));
  }
}

/** Hyper-parameters of the DDPG agent (defaults: the HAQ code's). */
export interface DdpgOptions {
  /** Width of both hidden layers of actor and critic (default 300). */
  readonly hidden?: number;
  /** Adam learning rate of the actor (default 1e-4). */
  readonly actorLr?: number;
  /** Adam learning rate of the critic (default 1e-3). */
  readonly criticLr?: number;
  /** Soft target update rate τ (default 0.01). */
  readonly tau?: number;
  /** Discount γ (default 1). */
  readonly discount?: number;
  /** Minibatch size (default 64). */
  readonly batchSize?: number;
  /** Replay buffer capacity (default 2,000). */
  readonly bufferSize?: number;
  /** Moving-average rate α of the reward baseline (default 0.5). */
  readonly baselineAlpha?: number;
  /** Seed of the networks' initialisation, the exploration noise and the minibatches (default 0). */
  readonly seed?: number;
}

/** Losses of one `DdpgAgent.update`. */
export interface DdpgUpdate {
  /** Critic mean squared error before its step. */
  readonly valueLoss: number;
  /** −mean Q(s, μ(s)) before the actor's step. */
  readonly policyLoss: number;
  /** The reward baseline after this batch. */
  readonly baseline: number;
}

/** DDPG with a reward baseline, as HAQ uses it (see the module comment). */
export class DdpgAgent {
  readonly stateSize: number;
  readonly actor: HaqActor;
  readonly critic: HaqCritic;
  readonly actorTarget: HaqActor;
  readonly criticTarget: HaqCritic;
  readonly buffer: ReplayBuffer;
  readonly rng: Rng;
  /** The moving-average reward baseline (null before the first update). */
  baseline: number | null = null;
  private readonly actorOptimizer: Adam;
  private readonly criticOptimizer: Adam;
  private readonly tau: number;
  private readonly discount: number;
  private readonly batchSize: number;
  private readonly baselineAlpha: number;

  constructor(stateSize: number, options: DdpgOptions = {}) {
    if (!Number.isInteger(stateSize) || stateSize < 1) throw new Error(`DdpgAgent: stateSize must be a positive integer, got ${stateSize}`);
    const hidden = options.hidden ?? 300;
    if (!Number.isInteger(hidden) || hidden < 1) throw new Error(`DdpgAgent: hidden must be a positive integer, got ${hidden}`);
    this.tau = options.tau ?? 0.01;
    this.discount = options.discount ?? 1;
    this.batchSize = options.batchSize ?? 64;
    this.baselineAlpha = options.baselineAlpha ?? 0.5;
    if (!(this.tau >= 0 && this.tau <= 1)) throw new Error(`DdpgAgent: tau must be in [0, 1], got ${this.tau}`);
    if (!(this.discount >= 0 && this.discount <= 1)) throw new Error(`DdpgAgent: discount must be in [0, 1], got ${this.discount}`);
    if (!Number.isInteger(this.batchSize) || this.batchSize < 1) throw new Error(`DdpgAgent: batchSize must be a positive integer, got ${this.batchSize}`);
    if (!(this.baselineAlpha >= 0 && this.baselineAlpha <= 1)) throw new Error(`DdpgAgent: baselineAlpha must be in [0, 1], got ${this.baselineAlpha}`);
    this.stateSize = stateSize;
    this.rng = new Rng(options.seed ?? 0);
    this.actor = new HaqActor(stateSize, hidden, this.rng);
    this.critic = new HaqCritic(stateSize, hidden, this.rng);
    this.actorTarget = new HaqActor(stateSize, hidden, this.rng);
    this.criticTarget = new HaqCritic(stateSize, hidden, this.rng);
    softUpdate(this.actorTarget, this.actor, 1);
    softUpdate(this.criticTarget, this.critic, 1);
    this.actorOptimizer = new Adam(this.actor.parameters(), { lr: options.actorLr ?? 1e-4 });
    this.criticOptimizer = new Adam(this.critic.parameters(), { lr: options.criticLr ?? 1e-3 });
    this.buffer = new ReplayBuffer(options.bufferSize ?? 2000);
  }

  /** μ(s) for one state. */
  policy(state: Float32Array): number {
    return noGrad(() => this.actor.forward(new Tensor(state, [1, this.stateSize])).data[0]!);
  }

  /** Q(s, a) for one state and action. */
  value(state: Float32Array, action: number): number {
    return noGrad(() => this.critic.forward(new Tensor(state, [1, this.stateSize]), new Tensor(Float32Array.of(action), [1, 1])).data[0]!);
  }

  /** μ(s) perturbed by N(0, σ²) truncated to [0, 1]. */
  explore(state: Float32Array, sigma: number): number {
    return truncatedNormal(this.rng, this.policy(state), sigma, 0, 1);
  }

  /** A uniform action in [0, 1) (warm-up). */
  randomAction(): number {
    return this.rng.uniform();
  }

  /**
   * One DDPG step on a minibatch: baseline update, critic regression to (R − b) + γ·(1 − done)·
   * Q'(s', μ'(s')), actor ascent on Q(s, μ(s)), soft target updates. Needs a non-empty buffer.
   */
  update(): DdpgUpdate {
    const batch = this.buffer.sample(this.batchSize, this.rng);
    const n = batch.length;
    const s = this.stateSize;
    const states = new Float32Array(n * s);
    const nexts = new Float32Array(n * s);
    const actions = new Float32Array(n);
    let rewardMean = 0;
    batch.forEach((t, i) => {
      states.set(t.state, i * s);
      nexts.set(t.next, i * s);
      actions[i] = t.action;
      rewardMean += t.reward / n;
    });
    this.baseline = this.baseline === null ? rewardMean : this.baseline + this.baselineAlpha * (rewardMean - this.baseline);
    const stateT = new Tensor(states, [n, s]);
    const nextT = new Tensor(nexts, [n, s]);
    const nextQ = noGrad(() => this.criticTarget.forward(nextT, this.actorTarget.forward(nextT)).data);
    const target = new Float32Array(n);
    batch.forEach((t, i) => (target[i] = t.reward - this.baseline! + (t.done ? 0 : this.discount * nextQ[i]!)));

    this.criticOptimizer.zeroGrad();
    const valueLoss = mseLoss(this.critic.forward(stateT, new Tensor(actions, [n, 1])), new Tensor(target, [n, 1]));
    valueLoss.backward();
    this.criticOptimizer.step();

    this.actorOptimizer.zeroGrad();
    const policyLoss = neg(mean(this.critic.forward(stateT, this.actor.forward(stateT))));
    policyLoss.backward();
    this.actorOptimizer.step();
    this.critic.zeroGrad();  // the actor's loss also reached the critic's parameters

    softUpdate(this.actorTarget, this.actor, this.tau);
    softUpdate(this.criticTarget, this.critic, this.tau);
    return { valueLoss: valueLoss.item(), policyLoss: policyLoss.item(), baseline: this.baseline };
  }
}

// ------------------------------------------------------------------ the search loop

/** One decision of an episode: a layer's weight or activation width. */
export interface HaqDecision {
  /** Static features (normalised over the decisions by `haq`). */
  readonly features: readonly number[];
  /** Number of candidate widths, ordered from narrowest to widest. */
  readonly choices: number;
  /** 'weight' or 'activation' (a state feature). */
  readonly kind: 'weight' | 'activation';
}

/** What `haq` searches: the decisions, the budget check and the reward of a plan. */
export interface HaqEnvironment {
  readonly decisions: readonly HaqDecision[];
  /** Costs of a plan (choice index per decision), one per budget. */
  costs(plan: readonly number[]): readonly number[];
  /** Budgets, aligned with `costs`. */
  readonly budgets: readonly number[];
  /** Reward of a plan within the budgets (called once per distinct plan; higher is better). */
  reward(plan: readonly number[]): number | Promise<number>;
}

export interface HaqOptions extends DdpgOptions {
  /** Episodes (default 300). */
  readonly episodes?: number;
  /** Episodes of uniform random actions before the policy acts and learns (default 20). */
  readonly warmup?: number;
  /** Initial exploration std σ₀ (default 0.5). */
  readonly sigma?: number;
  /** σ decay per episode after the warm-up (default 0.995; HAQ's 0.99 suits its 600 episodes). */
  readonly sigmaDecay?: number;
  /**
   * The action a transition stores: 'forced' (default) — a decision the budget forcing lowered is
   * stored at the centre of the bin it ended in, so the critic learns the value of what was
   * carried out; 'proposed' — the agent's action as sampled (the HAQ code).
   */
  readonly credit?: 'forced' | 'proposed';
  /** DDPG updates per transition of each finished episode after the warm-up (default 1). */
  readonly updatesPerStep?: number;
  /** Polled before every episode after the first: true stops, keeping the best plan so far. */
  shouldStop?(): boolean;
  /** After each episode. */
  onEpisode?(episode: HaqEpisode): void;
}

/** The record of one episode. */
export interface HaqEpisode {
  readonly episode: number;
  /** The agent's actions. */
  readonly actions: readonly number[];
  /** Choices before the budget was forced. */
  readonly proposed: readonly number[];
  /** The plan after forcing (evaluated). */
  readonly plan: readonly number[];
  readonly costs: readonly number[];
  readonly reward: number;
  /** Exploration std (NaN in the warm-up: uniform actions). */
  readonly sigma: number;
  /** Mean losses of the updates after this episode (NaN when none ran). */
  readonly valueLoss: number;
  readonly policyLoss: number;
  /** Best reward so far. */
  readonly bestReward: number;
}

export interface HaqResult {
  /** The best plan: highest reward, then lowest first cost. */
  readonly best: { readonly plan: readonly number[]; readonly reward: number; readonly costs: readonly number[] };
  readonly history: readonly HaqEpisode[];
  readonly episodes: number;
  /** Distinct plans evaluated. */
  readonly evaluations: number;
  readonly stopped: boolean;
  readonly agent: DdpgAgent;
}

const FIT_SLACK = 1e-12;

/** Min–max normalises each feature column over the rows (a constant column becomes 0). */
export function normalizeFeatures(rows: readonly (readonly number[])[]): number[][] {
  if (rows.length === 0) return [];
  const width = rows[0]!.length;
  if (rows.some((r) => r.length !== width)) throw new Error('normalizeFeatures: rows differ in length');
  const out = rows.map((r) => r.slice());
  for (let c = 0; c < width; c++) {
    const values = rows.map((r) => r[c]!);
    if (values.some((v) => !Number.isFinite(v))) throw new Error(`normalizeFeatures: feature ${c} is not finite`);
    const lo = Math.min(...values);
    const hi = Math.max(...values);
    for (const r of out) r[c] = hi > lo ? (r[c]! - lo) / (hi - lo) : 0;
  }
  return out;
}

/**
 * Runs the HAQ agent on `env` (see the module comment). The first episode always runs, so a
 * stop requested before the search began still leaves a plan. Throws NoAllocationFitsError when
 * even every decision at its narrowest choice exceeds a budget.
 */
export async function haq(env: HaqEnvironment, options: HaqOptions = {}): Promise<HaqResult> {
  const decisions = env.decisions;
  if (decisions.length === 0) throw new Error('haq: no decisions');
  decisions.forEach((d, i) => {
    if (!Number.isInteger(d.choices) || d.choices < 1) throw new Error(`haq: decision ${i} has ${d.choices} choices`);
  });
  const episodes = options.episodes ?? 300;
  const warmup = options.warmup ?? 20;
  const sigma0 = options.sigma ?? 0.5;
  const sigmaDecay = options.sigmaDecay ?? 0.995;
  const credit = options.credit ?? 'forced';
  const updatesPerStep = options.updatesPerStep ?? 1;
  if (!Number.isInteger(episodes) || episodes < 1) throw new Error(`haq: episodes must be a positive integer, got ${episodes}`);
  if (!Number.isInteger(warmup) || warmup < 0) throw new Error(`haq: warmup must be a non-negative integer, got ${warmup}`);
  if (!(sigma0 >= 0)) throw new Error(`haq: sigma must be >= 0, got ${sigma0}`);
  if (!(sigmaDecay > 0 && sigmaDecay <= 1)) throw new Error(`haq: sigmaDecay must be in (0, 1], got ${sigmaDecay}`);
  if (credit !== 'forced' && credit !== 'proposed') throw new Error(`haq: credit must be 'forced' or 'proposed', got '${String(credit)}'`);
  if (!Number.isInteger(updatesPerStep) || updatesPerStep < 0) throw new Error(`haq: updatesPerStep must be a non-negative integer, got ${updatesPerStep}`);

  const fits = (plan: readonly number[]): boolean => {
    const c = env.costs(plan);
    return c.every((v, k) => v <= env.budgets[k]! + Math.abs(env.budgets[k]!) * FIT_SLACK);
  };
  const lowest = decisions.map(() => 0);
  if (!fits(lowest)) throw new NoAllocationFitsError(env.budgets, env.costs(lowest));

  const staticFeatures = normalizeFeatures(decisions.map((d) => d.features));
  const stateSize = staticFeatures[0]!.length + 2;
  const stateOf = (t: number, previous: number): Float32Array => {
    const s = new Float32Array(stateSize);
    s.set(staticFeatures[t]!);
    s[stateSize - 2] = decisions[t]!.kind === 'weight' ? 1 : 0;
    s[stateSize - 1] = previous;
    return s;
  };
  const agent = new DdpgAgent(stateSize, { ...options, bufferSize: options.bufferSize ?? 128 * decisions.length });
  const cache = new Map<string, number>();
  const history: HaqEpisode[] = [];
  let best: HaqResult['best'] | null = null;
  let stopped = false;

  for (let episode = 0; episode < episodes; episode++) {
    // Let signal handlers and timers run (a SIGINT handler setting the stop flag) between episodes.
    await new Promise<void>((resolve) => setImmediate(resolve));
    if (episode > 0 && options.shouldStop?.()) {
      stopped = true;
      break;
    }
    const warm = episode < warmup;
    const sigma = warm ? NaN : sigma0 * sigmaDecay ** (episode - warmup);
    const states: Float32Array[] = [];
    const actions: number[] = [];
    let previous = 1;
    for (let t = 0; t < decisions.length; t++) {
      const state = stateOf(t, previous);
      const action = warm ? agent.randomAction() : agent.explore(state, sigma);
      states.push(state);
      actions.push(action);
      previous = action;
    }
    const proposed = actions.map((a, t) => actionToChoice(a, decisions[t]!.choices));
    const forced = forceToBudget(proposed, fits);
    if (!forced.fits) throw new Error('haq: the budget forcing ended over budget although the narrowest plan fits');  // cannot happen: lowering ends at `lowest`
    const plan = forced.plan;
    const key = plan.join(',');
    let reward = cache.get(key);
    if (reward === undefined) {
      reward = await env.reward(plan);
      if (!Number.isFinite(reward)) throw new Error(`haq: the reward of plan [${key}] is ${reward}`);
      cache.set(key, reward);
    }
    const costs = env.costs(plan);
    if (best === null || reward > best.reward || (reward === best.reward && costs[0]! < best.costs[0]!)) best = { plan, reward, costs };
    // The actions stored: as proposed, or (credit 'forced') a decision the forcing lowered at the centre of its final bin.
    const stored = credit === 'forced' ? actions.map((a, t) => (plan[t] === proposed[t] ? a : (plan[t]! + 0.5) / decisions[t]!.choices)) : actions;
    const storedStates = credit === 'forced' ? stored.map((_a, t) => stateOf(t, t === 0 ? 1 : stored[t - 1]!)) : states;
    storedStates.forEach((state, t) => {
      const last = t === states.length - 1;
      agent.buffer.push({ state, action: stored[t]!, reward: reward!, next: last ? state : storedStates[t + 1]!, done: last });
    });
    let valueLoss = 0;
    let policyLoss = 0;
    let updates = 0;
    if (!warm) {
      for (let u = 0; u < updatesPerStep * decisions.length; u++) {
        const r = agent.update();
        valueLoss += r.valueLoss;
        policyLoss += r.policyLoss;
        updates++;
      }
    }
    const record: HaqEpisode = {
      episode, actions, proposed, plan, costs, reward, sigma,
      valueLoss: updates ? valueLoss / updates : NaN, policyLoss: updates ? policyLoss / updates : NaN, bestReward: best.reward,
    };
    history.push(record);
    options.onEpisode?.(record);
  }
  return { best: best!, history, episodes: history.length, evaluations: cache.size, stopped, agent };
}

// ------------------------------------------------------------------ networks

/** A budget of `haqSearch`: a cost model and its limit (in the model's unit). */
export interface HaqBudget {
  readonly cost: CostModel;
  readonly value: number;
}

export interface HaqSearchOptions extends Omit<HaqOptions, 'onEpisode'> {
  /** Budgets; the plan must fit all of them. The first one orders ties and is the report's axis. */
  readonly budgets: readonly HaqBudget[];
  /** Further cost models recorded for every candidate (report axes). */
  readonly costs?: readonly CostModel[];
  /** Candidate weight widths (default [2, 3, 4, 8]). */
  readonly wBits?: readonly number[];
  /** Candidate activation widths (default [8]); with more than one, each layer gets an activation decision. */
  readonly aBits?: readonly number[];
  /** λ of the reward λ·(acc − acc_float), accuracy in percent (default 0.1, as HAQ). */
  readonly rewardScale?: number;
  /**
   * How a plan is scored (default PTQ: calibrate + evaluate on `data.eval`; HAQ fine-tunes one
   * epoch instead: method 'qat' with `qatSteps`).
   */
  readonly evaluation?: Omit<EvaluateAssignmentOptions, 'progress' | 'inspect'>;
  /** Also score the uniform plans (every layer at one weight width, widest activations) as references (default true). */
  readonly references?: boolean;
  /** After each episode, with the plan's candidate record. */
  onEpisode?(episode: HaqEpisode, candidate: SearchCandidate): void;
}

export interface HaqSearchResult {
  readonly layers: LayerInfo[];
  /** Accuracy of the float model on `data.eval` (the reward's reference). */
  readonly floatAccuracy: number;
  /** The agent's best plan (within every budget). */
  readonly chosen: SearchCandidate;
  /** Every distinct plan evaluated (agent plans, then the uniform references). */
  readonly candidates: SearchCandidate[];
  /** Non-dominated candidates on (accuracy ↑, every cost ↓). */
  readonly front: SearchCandidate[];
  readonly uniform: SearchCandidate[];
  readonly history: readonly HaqEpisode[];
  readonly episodes: number;
  readonly evaluations: number;
  readonly stopped: boolean;
}

function sampleShape(data: SearchData): number[] {
  for (const { x } of data.calibration as Iterable<{ x: Tensor }>) return x.shape.slice(1);
  throw new Error('haqSearch: the calibration data is empty');
}

/**
 * The static HAQ features of a layer: index, conv?, in/out channels, kernel, stride, #weights,
 * input feature-map size (raw, as HAQ; `haq` min–max normalises them. On the synthetic problem of
 * haq.test.ts log₂ counts learned worse: 0.89 of the gap closed against 0.97).
 */
export function layerFeatures(layer: LayerInfo, index: number): number[] {
  const conv = layer.conv;
  const inChannels = conv ? conv.inChannels : layer.reduction;
  const featureMap = conv && layer.inShape.length === 3 ? layer.inShape[1]! * layer.inShape[2]! : 1;
  return [index, conv ? 1 : 0, inChannels, layer.outChannels, conv ? conv.kernelSize[0] : 1, conv ? conv.stride[0] : 0, layer.weightCount, featureMap];
}

/**
 * HAQ over the Conv2d / Linear layers of a trained float `model` (quantized and restored for
 * every plan): weight widths from `wBits` and, with several `aBits`, input-activation widths;
 * budgets on any cost models (size, BitOps, the measured latency table, bit-serial cycles,
 * energy) priced once per (layer, w, a) before the search. Rewards: λ·(acc − acc_float) in
 * percent, acc by PTQ (default) or a short QAT fine-tune of each plan.
 */
export async function haqSearch(model: TensorModule, data: SearchData, options: HaqSearchOptions): Promise<HaqSearchResult> {
  if (options.budgets.length === 0) throw new Error('haqSearch: give at least one budget');
  for (const b of options.budgets) if (!(b.value > 0 && Number.isFinite(b.value))) throw new Error(`haqSearch: the ${b.cost.name} budget must be a positive finite number, got ${b.value}`);
  const layers = describeLayers(model, sampleShape(data));
  const wBits = [...new Set(options.wBits ?? [2, 3, 4, 8])].sort((x, y) => x - y);
  const aBits = [...new Set(options.aBits ?? [8])].sort((x, y) => x - y);
  for (const [name, list] of [['wBits', wBits], ['aBits', aBits]] as const) {
    if (list.length === 0) throw new Error(`haqSearch: ${name} is empty`);
    for (const b of list) if (!Number.isInteger(b) || b < 1 || b > 16) throw new Error(`haqSearch: ${name} entries must be integers in [1, 16], got ${b}`);
  }
  const rewardScale = options.rewardScale ?? 0.1;
  const searchA = aBits.length > 1;
  const widestA = aBits[aBits.length - 1]!;
  const decisions: HaqDecision[] = layers.flatMap((l, i) => {
    const features = layerFeatures(l, i);
    const w: HaqDecision = { features, choices: wBits.length, kind: 'weight' };
    return searchA ? [w, { features, choices: aBits.length, kind: 'activation' as const }] : [w];
  });
  const choiceOf = (plan: readonly number[], layer: number): BitChoice => searchA
    ? { w: wBits[plan[2 * layer]!]!, a: aBits[plan[2 * layer + 1]!]! }
    : { w: wBits[plan[layer]!]!, a: widestA };
  const assignmentOf = (plan: readonly number[]): BitAssignment => Object.fromEntries(layers.map((l, i) => [l.name, choiceOf(plan, i)]));
  // Cost tables [budget][layer][w index][a index], priced once (the latency model measures here).
  const tables = options.budgets.map((b) => layers.map((l) => wBits.map((w) => aBits.map((a) => layerChoiceCost(b.cost, l, { w, a })))));
  const index = (bits: readonly number[], b: number): number => bits.indexOf(b);
  const costs = (plan: readonly number[]): number[] => tables.map((table) => layers.reduce((s, _l, i) => {
    const c = choiceOf(plan, i);
    return s + table[i]![index(wBits, c.w)]![index(aBits, c.a)]!;
  }, 0));
  const allCosts = [...options.budgets.map((b) => b.cost), ...(options.costs ?? []).filter((c) => !options.budgets.some((b) => b.cost.name === c.name))];
  const evaluation = options.evaluation ?? { method: 'ptq' as const };
  const floatAccuracy = evaluateModel(model, data.eval).accuracy;
  const candidates = new Map<string, SearchCandidate>();
  const score = (assignment: BitAssignment, uniform?: string): SearchCandidate => {
    const s = evaluateAssignmentSync(model, assignment, data, { ...evaluation, method: evaluation.method ?? 'ptq' });
    return {
      assignment, accuracy: s.accuracy,
      ...(evaluation.method === 'qat' ? { retrainedAccuracy: s.accuracy } : { ptqAccuracy: s.accuracy }),
      costs: assignmentCosts(allCosts, layers, assignment), ...(uniform ? { uniform } : {}),
    };
  };
  const env: HaqEnvironment = {
    decisions,
    budgets: options.budgets.map((b) => b.value),
    costs,
    reward(plan) {
      const c = score(assignmentOf(plan));
      candidates.set(plan.join(','), c);
      return rewardScale * 100 * (c.accuracy - floatAccuracy);
    },
  };
  const result = await haq(env, {
    ...options,
    onEpisode: (e) => options.onEpisode?.(e, candidates.get(e.plan.join(','))!),
  });
  const chosen = candidates.get(result.best.plan.join(','))!;
  const uniform: SearchCandidate[] = [];
  if (options.references !== false && !result.stopped) {
    for (const w of wBits) uniform.push(score(Object.fromEntries(layers.map((l) => [l.name, { w, a: widestA }])), uniformLabel({ w, a: widestA })));
  }
  const all = [...candidates.values(), ...uniform];
  return {
    layers, floatAccuracy, chosen, candidates: all, front: candidateFront(all, allCosts.map((c) => c.name)), uniform,
    history: result.history, episodes: result.episodes, evaluations: result.evaluations, stopped: result.stopped,
  };
}
