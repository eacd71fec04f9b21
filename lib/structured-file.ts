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
