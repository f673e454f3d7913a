/**
 * The quantization plan the binary ResNet benches train with: the library's Bi-Real preset
 * (src/quant/config/bireal.ts), re-exported under the names the benches import.
 */
export { biRealPlan, binaryMagnitudeAware, int8Signed, signApprox } from '../../src/quant/config/index.ts';
