/** Reading a plan from a file (YAML or JSON): the CLI's edge. Validation is the shared schema's. */
import { readFile } from 'node:fs/promises';
import YAML from 'yaml';
import { parsePlan, PlanError, type MigrationPlan } from './plan';

export function parsePlanText(text: string, source: string): MigrationPlan {
  let data: unknown;
  try {
    data = source.endsWith('.json') ? JSON.parse(text) : YAML.parse(text);
  } catch (err) {
    throw new PlanError([`${source}: not valid ${source.endsWith('.json') ? 'JSON' : 'YAML'}: ${(err as Error).message.split('\n')[0]}`]);
  }
  return parsePlan(data);
}

export async function loadPlanFile(file: string): Promise<MigrationPlan> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new PlanError([`cannot read plan file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`]);
  }
  return parsePlanText(text, file);
}
