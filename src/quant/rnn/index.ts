/** Quantization-aware training of recurrent models at low bit widths: QatLSTM (configurable fake-quantized matmul operands). See docs/rnnt-4bit.md. */
export {
  QatLSTM, checkLstmSpec, DEFAULT_LSTM_WEIGHT, DEFAULT_LSTM_ACTIVATION,
  type QatLSTMOptions, type QatLSTMLayerQuantizers, type PerLayerSpec, type LstmOperand,
} from './qat-lstm.ts';
