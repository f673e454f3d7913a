export { backward, grad, noGrad, isGradEnabled, withGradMode } from './engine.ts';
export { gradientRule, isDifferentiable } from './gradients.ts';
