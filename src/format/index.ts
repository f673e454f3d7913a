/** File formats: the safetensors container (checkpoints, and the .lowbit model file built on it). */
export {
  encodeSafetensors,
  decodeSafetensors,
  readSafetensorsFile,
  writeSafetensorsFile,
  writeFileAtomic,
  safetensorsDTypeOf,
  SafetensorsError,
  MAX_HEADER_BYTES,
  type SafetensorsDType,
  type SafetensorsArray,
  type SafetensorsEntry,
  type SafetensorsContents,
  type SafetensorsInput,
} from './safetensors.ts';
