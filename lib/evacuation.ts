/**
 * The evacuation plan: every VI of a cloud (or those it names) moved to another cloud, a few at
 * a time, each as a migration of its own. One schema for the CLI, the client API, schedules and
 * the workflow, which validates it again (pure code: it runs in the workflow sandbox too).
 */
import { z } from 'zod';
import { cloudName, migrationOptionsSchema, viName, type MigrationPlanInput } from './plan';
import { problemsOf } from './schema-problems';

export const evacuationPlanSchema = z
  .object({
    /** The cloud to empty. */
    source: cloudName,
    /** Where its VIs go. */
    destination: cloudName,
    /** Only these VIs (default: every VI the source hosts). A name the source does not host is reported as skipped. */
    vis: z.array(viName).min(1, 'vis names no VI (leave it out to move them all)').optional(),
    /** How many VIs move at once. */
    concurrency: z.number().int().min(1).max(16).default(2),
    /** The options of each migration (lib/plan.ts). */
    options: migrationOptionsSchema.partial().optional(),
  })
  .strict()
  .superRefine((plan, ctx) => {
    if (plan.source === plan.destination) ctx.addIssue({ code: 'custom', path: ['destination'], message: `destination must differ from source (both are "${plan.source}")` });
    const seen = new Set<string>();
    for (const [i, vi] of (plan.vis ?? []).entries()) {
      if (seen.has(vi)) ctx.addIssue({ code: 'custom', path: ['vis', i], message: `VI "${vi}" is listed twice` });
      seen.add(vi);
    }
  });

export type EvacuationPlan = z.output<typeof evacuationPlanSchema>;
export type EvacuationPlanInput = z.input<typeof evacuationPlanSchema>;

export class EvacuationPlanError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid evacuation plan:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'EvacuationPlanError';
  }
}

/** Validates untrusted input; throws an EvacuationPlanError listing every problem with its path. */
export function parseEvacuationPlan(input: unknown): EvacuationPlan {
  const result = evacuationPlanSchema.safeParse(input);
  if (result.success) return result.data;
  throw new EvacuationPlanError(problemsOf(result.error, '(evacuation)'));
}

/** The migration of one VI of an evacuation. */
export function migrationPlanFor(plan: EvacuationPlan, vi: string): MigrationPlanInput {
  return { name: `evacuate-${vi}`, vi, source: plan.source, destination: plan.destination, ...(plan.options ? { options: plan.options } : {}) };
}

/** What an evacuation did with each VI. */
export interface EvacuationReport {
  source: string;
  destination: string;
  startedAt: number;
  wallMs: number;
  moved: Array<{ vi: string; workflowId: string; wallMs: number; frozenMs: number }>;
  rolledBack: Array<{ vi: string; workflowId: string; reason: string }>;
  skipped: Array<{ vi: string; reason: string }>;
}

/** Where a running evacuation is (its query "progress"). */
export interface EvacuationProgress {
  state: 'listing' | 'moving' | 'completed';
  waiting: string[];
  moving: Array<{ vi: string; workflowId: string }>;
  report: Omit<EvacuationReport, 'wallMs'>;
}
