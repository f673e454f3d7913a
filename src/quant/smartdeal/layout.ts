/**
 * How a Linear or Conv2d weight is cut into SmartDeal groups W_g = Ce_g · B_g.
 *
 * The weight is viewed as O rows of fan-in F (OIHW flattened per output channel for Conv2d). Each
 * such row is cut into R = ⌈F / K⌉ consecutive pieces of K values, the rows of Ce:
 *   - Conv2d: K = kernel width, so a piece is one kernel row of one input channel
 *     (R = (I/groups)·kh) and the basis mixes along the kernel width, as in the paper's 3×3
 *     convolutions (Ce: (I·kh) × kw, B: kw × kw per output channel);
 *   - Linear: K = `linearBasisSize` (the paper uses 3), the input vector is zero-padded to R·K.
 * The R pieces of an output channel are split into ⌈R / S⌉ groups of S = rowsPerBasis pieces (the
 * last group padded with rows that stay 0); each group has its own K × K basis. Shapes:
 * coefficients [G, S, K], basis [G, K, K], with G = O·⌈R/S⌉ groups.
 */

/** The cut of one weight (see the file comment). */
export interface SmartDealLayout {
  /** Output channels / features O. */
  readonly outChannels: number;
  /** Fan-in F per output channel. */
  readonly fanIn: number;
  /** Basis size K (columns of Ce, rows and columns of B). */
  readonly basisSize: number;
  /** Pieces (Ce rows) per output channel, R = ⌈F/K⌉. */
  readonly rowsPerChannel: number;
  /** Ce rows per group S (sharing one basis). */
  readonly rowsPerGroup: number;
  /** Groups per output channel ⌈R/S⌉. */
  readonly groupsPerChannel: number;
  /** Groups G = O·groupsPerChannel. */
  readonly groups: number;
  /** The weight's own shape ([O, F] or OIHW). */
  readonly weightShape: readonly number[];
}

/** Builds the layout of a weight of `weightShape` with basis size K and S rows per basis (default: all rows of a channel). */
export function makeLayout(weightShape: readonly number[], basisSize: number, rowsPerBasis?: number): SmartDealLayout {
  if (weightShape.length < 2) throw new Error(`smartdeal: a weight needs rank >= 2, got [${weightShape.join(', ')}]`);
  const outChannels = weightShape[0]!;
  const fanIn = weightShape.slice(1).reduce((p, d) => p * d, 1);
  if (!Number.isInteger(basisSize) || basisSize < 1 || basisSize > 16) throw new Error(`smartdeal: basis size must be an integer in [1, 16], got ${basisSize}`);
  const rowsPerChannel = Math.ceil(fanIn / basisSize);
  const rowsPerGroup = rowsPerBasis === undefined ? rowsPerChannel : rowsPerBasis;
  if (!Number.isInteger(rowsPerGroup) || rowsPerGroup < 1) throw new Error(`smartdeal: rowsPerBasis must be a positive integer, got ${rowsPerBasis}`);
  const effective = Math.min(rowsPerGroup, rowsPerChannel);
  const groupsPerChannel = Math.ceil(rowsPerChannel / effective);
  return {
    outChannels, fanIn, basisSize, rowsPerChannel, rowsPerGroup: effective, groupsPerChannel,
    groups: outChannels * groupsPerChannel, weightShape: [...weightShape],
  };
}

/**
 * Position of the Ce entry (group g, local row s, column k) in the flattened weight [O, F], or −1
 * for padding (a padded row, or a column past F).
 */
export function weightIndex(layout: SmartDealLayout, g: number, s: number, k: number): number {
  const o = Math.floor(g / layout.groupsPerChannel);
  const row = (g % layout.groupsPerChannel) * layout.rowsPerGroup + s;
  if (row >= layout.rowsPerChannel) return -1;
  const f = row * layout.basisSize + k;
  return f < layout.fanIn ? o * layout.fanIn + f : -1;
}

/** True when Ce row s of group g is a real piece of the weight (not padding). */
export function isRealRow(layout: SmartDealLayout, g: number, s: number): boolean {
  return (g % layout.groupsPerChannel) * layout.rowsPerGroup + s < layout.rowsPerChannel;
}
