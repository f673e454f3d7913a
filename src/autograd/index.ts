export { backward, grad, noGrad, isGradEnabled, withGradMode } from './engine.ts';
export { releaseTensor } from './release.ts';
export { gradientRule, isDifferentiable } from './gradients.ts';
export { gradcheck, type GradcheckResult } from './gradcheck.ts';
