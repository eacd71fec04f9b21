/** Reading a YAML or JSON document from a file: the edge shared by plan files and VI files. */
import { readFile } from 'node:fs/promises';
import YAML from 'yaml';

/** Parses YAML (or JSON, by the file's extension); the error names the file and the syntax problem. */
export function parseStructuredText(text: string, source: string): unknown {
  const json = source.endsWith('.json');
  try {
    return json ? JSON.parse(text) : YAML.parse(text);
  } catch (err) {
    throw new Error(`${source}: not valid ${json ? 'JSON' : 'YAML'}: ${(err as Error).message.split('\n')[0]}`);
  }
}

export async function readStructuredFile(file: string, what: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new Error(`cannot read ${what} ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  return parseStructuredText(text, file);
}

/**
 * Reads a YAML/JSON file and validates it: a file that cannot be read or parsed fails with the
 * same error type as invalid content (`toError`), so callers handle one kind of refusal.
 */
export async function loadValidatedFile<T>(file: string, what: string, validate: (data: unknown) => T, toError: (problems: string[]) => Error): Promise<T> {
  let data: unknown;
  try {
    data = await readStructuredFile(file, what);
  } catch (err) {
    throw toError([(err as Error).message]);
  }
  return validate(data);
}
