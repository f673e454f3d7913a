/**
 * The PyTorch peer of lowbit's `mobilenet` (bench/peers/torch_mobilenet.py): lowbit's weights
 * handed over as safetensors (strict load by lowbit's names), the strides (not in the weights) as
 * a JSON config, and one task run as a child process. Never throws: a missing python or torch, a
 * crash or a timeout comes back as `{ ok: false, reason }`.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeSafetensorsFile } from '../../src/format/safetensors.ts';
import type { Conv2d, InvertedResidual, MobileNet } from '../../src/nn/index.ts';
import { torchPeerEnv } from '../lib.ts';
import { runChildJson, type ChildJsonResult } from './child-json.ts';
import { pythonPath } from './torch.ts';

const SCRIPT = join(dirname(fileURLToPath(import.meta.url)), 'torch_mobilenet.py');

/** The strides the peer needs besides the weights. */
export function mobilenetPeerConfig(model: MobileNet): { stemStride: number; blockStrides: number[] } {
  return {
    stemStride: (model.stem.at(0) as Conv2d).stride[0],
    blockStrides: [...model.blocks].map((b) => ((b as InvertedResidual).depthwise.at(0) as Conv2d).stride[0]),
  };
}

/** `model`'s state dict as the peer's safetensors file. */
export function writeMobilenetWeights(path: string, model: MobileNet): void {
  writeSafetensorsFile(path, [...model.stateDict()].map(([k, t]) => [k, t.dtype === 'int32' ? { dtype: 'I32', shape: t.shape, data: Int32Array.from(t.data) } : { shape: t.shape, data: Float32Array.from(t.data) }] as const));
}

export interface TorchMobilenetArgs {
  task: 'infer' | 'train' | 'logits';
  /** The safetensors file of `writeMobilenetWeights`. */
  weights: string;
  model: MobileNet;
  batch: number;
  threads: number;
  repeats?: number;
  /** Seconds per repeat. */
  seconds?: number;
  /** Further flags (`--input`, `--out`, `--lr`). */
  extra?: readonly string[];
}

export function runTorchMobilenet(a: TorchMobilenetArgs, timeoutSeconds = 600): Promise<ChildJsonResult> {
  const py = pythonPath();
  if (!existsSync(py)) return Promise.resolve({ ok: false, reason: `python not found at ${py}` });
  const argv = [
    SCRIPT, '--task', a.task, '--weights', a.weights, '--config', JSON.stringify(mobilenetPeerConfig(a.model)), '--batch', String(a.batch),
    '--threads', String(a.threads), ...(a.repeats === undefined ? [] : ['--repeats', String(a.repeats)]),
    ...(a.seconds === undefined ? [] : ['--seconds', String(a.seconds)]), ...(a.extra ?? []),
  ];
  return runChildJson(py, argv, {
    name: 'PyTorch MobileNet peer',
    env: torchPeerEnv(a.threads),
    timeoutSeconds,
    failure: (code, err) => `PyTorch peer failed (exit ${String(code)}): ${(err.trim().split('\n').pop() ?? '').slice(0, 200)}`,
  });
}
