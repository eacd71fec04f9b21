/** Reading a plan from a file (YAML or JSON): the CLI's edge. Validation is the shared schema's. */
import { parsePlan, PlanError, type MigrationPlan } from './plan';
import { loadValidatedFile, parseStructuredText } from './structured-file';

export function parsePlanText(text: string, source: string): MigrationPlan {
  let data: unknown;
  try {
    data = parseStructuredText(text, source);
  } catch (err) {
    throw new PlanError([(err as Error).message]);
  }
  return parsePlan(data);
}

export function loadPlanFile(file: string): Promise<MigrationPlan> {
  return loadValidatedFile(file, 'plan file', parsePlan, (problems) => new PlanError(problems));
}
