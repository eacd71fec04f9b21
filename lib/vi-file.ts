/** Reading a VI description from a file (YAML or JSON). Validation is the shared schema's (lib/vi-spec.ts). */
import { loadValidatedFile } from './structured-file';
import { parseViSpec, ViSpecError, type ViSpec } from './vi-spec';

export function loadViFile(file: string): Promise<ViSpec> {
  return loadValidatedFile(file, 'VI file', parseViSpec, (problems) => new ViSpecError(problems));
}
