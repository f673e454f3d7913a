import type { Module } from '../../nn/module.ts';
import type { Tensor } from '../../tensor/tensor.ts';
import { BINARY_KINDS } from '../config/qconfig.ts';
import { Quantizer } from '../quantizers/quantizer.ts';
import { quantizedLayers } from './prepare.ts';

export interface QatParamGroupOptions {
  lr: number;
  /**
   * LR multiplier of quantizer parameters (LSQ steps, PACT clips, ...). Default 0.1: at the
   * model's LR, Adam's roughly lr-sized steps can push a 4-bit LSQ step (≈ 0.04) through zero.
   */
  quantLrScale?: number;
  /** LR multiplier of latent weights of binary layers (BNNs train them faster). Default 1. */
  binaryLrScale?: number;
  weightDecay?: number;
}

/**
 * Splits a prepared model's parameters into optimizer groups: ordinary weights, latent binary
 * weights and quantizer parameters (no weight decay), each with its own LR.
 */
export function qatParamGroups(model: Module, options: QatParamGroupOptions): { params: Tensor[]; lr: number; weightDecay: number }[] {
  const quantParams = new Set<Tensor>();
  for (const m of model.modules()) if (m instanceof Quantizer) for (const p of m.parameters()) quantParams.add(p);
  const binaryParams = new Set<Tensor>();
  for (const info of quantizedLayers(model)) {
    if (info.weightSpec && BINARY_KINDS.includes(info.weightSpec.kind)) binaryParams.add(info.layer.weight);
  }
  const weightDecay = options.weightDecay ?? 0;
  const rest = model.parameters().filter((p) => !quantParams.has(p) && !binaryParams.has(p));
  const groups = [
    { params: rest, lr: options.lr, weightDecay },
    { params: [...binaryParams], lr: options.lr * (options.binaryLrScale ?? 1), weightDecay },
    { params: [...quantParams], lr: options.lr * (options.quantLrScale ?? 0.1), weightDecay: 0 },
  ];
  return groups.filter((g) => g.params.length > 0);
}
