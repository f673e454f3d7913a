export { modelChain, weightedLayers, NceError, type ChainLayer, type ChainModule } from './chain.ts';
export { resizeChain, expandModel, outWidth, type ResizeOptions } from './resize.ts';
export { architectureLayers, architectureCost, costTerms, costFromWidths, type CostBits, type CostTerm } from './cost.ts';
export { Supernet, ChannelMask, candidateWidths, type SearchedLayer, type SupernetOptions } from './supernet.ts';
export { nceSearch, expectedCostTensor, repairChoice, fillChoice, type NceSearchOptions, type NceResult } from './search.ts';
