/** Reading a VI description from a file (YAML or JSON). Validation is the shared schema's (lib/vi-spec.ts). */
import { readStructuredFile } from './structured-file';
import { parseViSpec, ViSpecError, type ViSpec } from './vi-spec';

export async function loadViFile(file: string): Promise<ViSpec> {
  let data: unknown;
  try {
    data = await readStructuredFile(file, 'VI file');
  } catch (err) {
    throw new ViSpecError([(err as Error).message]);
  }
  return parseViSpec(data);
}
