/**
 * Budgets with units, as the CLI takes them (`size=40KB`, `bitops=1.2G`, `latency=2ms`,
 * `energy=5uJ`, `bitserial=20k`), converted to the unit of the cost model they constrain, and the
 * display form of each cost model's values (size in bytes, latency in seconds, energy in joules).
 */
import { COST_MODEL_NAMES, type CostModelName } from './costs.ts';

/** A budget on one cost model, in that model's unit. */
export interface Budget {
  readonly cost: CostModelName;
  /** In the cost model's unit: bits (size), bitops, µs (latency), cycles (bitserial), pJ (energy). */
  readonly value: number;
  /** What the user wrote, e.g. 'size=40KB'. */
  readonly text: string;
}

/** A bad budget string: the message says what was expected. */
export class BudgetError extends Error {
  override name = 'BudgetError';
}

const SI: Record<string, number> = { '': 1, k: 1e3, K: 1e3, M: 1e6, G: 1e9, T: 1e12 };

/** Unit name → factor to the cost model's unit, per cost model. */
const UNITS: Record<CostModelName, { units: Record<string, number>; example: string; unitless: boolean }> = {
  size: {
    units: { b: 1, bit: 1, bits: 1, B: 8, kB: 8e3, KB: 8e3, KiB: 8 * 1024, MB: 8e6, MiB: 8 * 1024 * 1024, kbit: 1e3, Kbit: 1e3, Mbit: 1e6 },
    example: 'size=40KB (B, KB = 1000 B, KiB = 1024 B, MB, MiB, bits)',
    unitless: false,
  },
  bitops: { units: SI, example: 'bitops=1.2G (optional k, M, G, T)', unitless: true },
  bitserial: { units: SI, example: 'bitserial=20k (cycles; optional k, M, G)', unitless: true },
  latency: { units: { ns: 1e-3, us: 1, 'µs': 1, ms: 1e3, s: 1e6 }, example: 'latency=2ms (ns, us, µs, ms, s)', unitless: false },
  energy: { units: { pJ: 1, nJ: 1e3, uJ: 1e6, 'µJ': 1e6, mJ: 1e9, J: 1e12 }, example: 'energy=5uJ (pJ, nJ, uJ, µJ, mJ, J)', unitless: false },
  silago: { units: SI, example: 'silago=20k (SiLago-like array cycles; optional k, M, G)', unitless: true },
  silagoEnergy: { units: SI, example: 'silagoEnergy=50k (SiLago-like MAC energy in 16-bit-MAC units; optional k, M, G)', unitless: true },
};

/**
 * Parses `name=value[unit]` into a budget in the cost model's unit. Throws `BudgetError` with
 * the accepted form for an unknown cost, a missing or unknown unit, or a non-positive value.
 */
export function parseBudget(text: string): Budget {
  const m = /^\s*([A-Za-z]+)\s*=\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([A-Za-zµ]*)\s*$/.exec(text);
  const name = /^\s*([A-Za-z]+)\s*=/.exec(text)?.[1];
  if (name !== undefined && !(COST_MODEL_NAMES as readonly string[]).includes(name)) {
    throw new BudgetError(`unknown budget cost '${name}' in '${text}' (known: ${COST_MODEL_NAMES.join(', ')})`);
  }
  if (!m) throw new BudgetError(`a budget reads <cost>=<number><unit>, e.g. size=40KB, bitops=1.2G, latency=2ms; got '${text}'`);
  const cost = m[1] as CostModelName;
  const spec = UNITS[cost];
  const unit = m[3]!;
  if (unit === '' && !spec.unitless) throw new BudgetError(`the ${cost} budget needs a unit: ${spec.example}; got '${text}'`);
  const factor = spec.units[unit];
  if (factor === undefined) throw new BudgetError(`unknown unit '${unit}' for a ${cost} budget: ${spec.example}`);
  const value = Number(m[2]) * factor;
  if (!(value > 0) || !Number.isFinite(value)) throw new BudgetError(`a budget must be a positive finite number, got '${text}'`);
  return { cost, value, text: text.trim() };
}

/** How a cost model's values are shown: value × `scale` in `unit` (SI-prefixed by the report). */
export interface CostDisplay {
  readonly label: string;
  readonly unit: string;
  readonly scale: number;
}

/** Display of a cost model by name/unit: size bits → bytes, µs → s, pJ → J; others as they are. */
export function costDisplay(name: string, unit: string): CostDisplay {
  switch (name) {
    case 'size':
      return { label: 'model size (weights)', unit: 'B', scale: 1 / 8 };
    case 'bitops':
      return { label: 'BitOps per sample', unit: 'bitops', scale: 1 };
    case 'latency':
      return { label: 'latency per sample', unit: 's', scale: unit === 'µs' || unit === 'us' ? 1e-6 : unit === 'ms' ? 1e-3 : 1 };
    case 'energy':
      return { label: 'energy per sample', unit: 'J', scale: unit === 'pJ' ? 1e-12 : 1 };
    case 'bitserial':
      return { label: 'bit-serial cycles per sample', unit: 'cycles', scale: 1 };
    case 'silago':
      return { label: 'SiLago-like array cycles per sample', unit: 'cycles', scale: 1 };
    case 'silagoEnergy':
      return { label: 'SiLago-like MAC energy per sample (16-bit MACs)', unit: 'E16', scale: 1 };
    default:
      return { label: name, unit, scale: 1 };
  }
}
