/**
 * The migration plan: the one schema that every entry point (CLI, client API, Web UI input,
 * schedules) validates against, and that the workflow validates again before touching anything.
 * Pure code (zod only) so that it also runs inside Temporal's workflow sandbox.
 */
import { z } from 'zod';
import { cloudName, containerName, viName } from './names';
import { problemsOf } from './schema-problems';

export { cloudName, viName } from './names';

/** How each migration goes: the plan's `options` (an evacuation passes them to each of its migrations). */
export const migrationOptionsSchema = z
  .object({
    /** Keep established TCP connections across the move (CRIU --tcp-established). */
    keepTcpConnections: z.boolean().default(true),
    /** How long the pre-copy transfers (before the freeze) may take, retries included. */
    transferTimeoutSeconds: z.number().int().min(10).max(86_400).default(1800),
    /**
     * Blackout budget: how long a container may stay frozen waiting for its image to reach
     * the destination and its restore to start. Past it, the migration gives up and resumes
     * the container at the source.
     */
    blackoutBudgetSeconds: z.number().int().min(5).max(3600).default(120),
    /** How long each rollback step (and each release after commit) keeps retrying an unreachable cloud. */
    rollbackTimeoutSeconds: z.number().int().min(10).max(86_400).default(600),
    /**
     * Wait, with everything prepared and the root filesystems copied, for an operator's
     * "approveCutover" signal before freezing anything.
     */
    approveCutover: z.boolean().default(false),
    /** How many containers of a group are transferred (and pre-copied) at once. */
    parallelTransfers: z.number().int().min(1).max(32).default(4),
    /**
     * After the move, outside connections open through the old floating IP are forwarded to
     * the container at the destination until they close or this long has passed; then the
     * old address is released. 0: released at once.
     */
    drainTimeoutSeconds: z.number().int().min(0).max(86_400).default(60),
    /**
     * Post-copy: the container restarts at the destination as soon as its process state has
     * arrived; its memory follows on demand (CRIU lazy pages) from a complete image kept at the
     * source until every page is in, so the blackout no longer grows with the memory size.
     */
    postCopy: z.boolean().default(false),
    /**
     * How each group's memory moves: "streamed" (the image crosses inside the freeze), "post-copy"
     * (as postCopy), or "auto": each group takes the one predicted shorter, streamed whenever a
     * member's processes fork (post-copy stalls on forks) or the destination has no image stream.
     * Absent: streamed, or post-copy with postCopy.
     */
    mode: z.enum(['streamed', 'post-copy', 'auto']).optional(),
  })
  .strict();

/** The plan's way of moving memory (postCopy is the older spelling of mode "post-copy"). */
export function transferMode(options: Pick<MigrationPlan['options'], 'postCopy' | 'mode'>): 'streamed' | 'post-copy' | 'auto' {
  return options.postCopy ? 'post-copy' : options.mode ?? 'streamed';
}

export const migrationPlanSchema = z
  .object({
    /** Names the migration; the workflow id is derived from it. */
    name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, 'a plan name is 1-63 characters: letters, digits, ".", "_" and "-"'),
    source: cloudName,
    destination: cloudName,
    /** The VI to move: inventory finds its containers at the source. */
    vi: viName.optional(),
    /** Containers to move, by name: the whole move without `vi`, or a part of the VI with it. */
    containers: z.array(containerName).min(1, 'the plan names no container to migrate').optional(),
    /**
     * The order of the move, in groups: the containers of a group are frozen together and
     * restored together (their connections to each other see one blackout); groups move one after
     * the other. Default: all the plan's containers in one group.
     */
    groups: z.array(z.array(containerName).min(1, 'a group names at least one container')).min(1).optional(),
    options: migrationOptionsSchema
      .default({ keepTcpConnections: true, transferTimeoutSeconds: 1800, blackoutBudgetSeconds: 120, rollbackTimeoutSeconds: 600, approveCutover: false, parallelTransfers: 4, drainTimeoutSeconds: 60, postCopy: false }),
  })
  .strict()
  .superRefine((plan, ctx) => {
    if (plan.source === plan.destination) {
      ctx.addIssue({ code: 'custom', path: ['destination'], message: `destination must differ from source (both are "${plan.source}")` });
    }
    if (plan.options.postCopy && plan.options.mode && plan.options.mode !== 'post-copy') {
      ctx.addIssue({ code: 'custom', path: ['options', 'mode'], message: `postCopy: true asks for post-copy, mode "${plan.options.mode}" for another: name one` });
    }
    if (!plan.vi && !plan.containers) {
      ctx.addIssue({ code: 'custom', path: ['containers'], message: 'the plan names neither a VI (vi) nor containers to migrate' });
    }
    const seen = new Set<string>();
    for (const [i, name] of (plan.containers ?? []).entries()) {
      if (seen.has(name)) ctx.addIssue({ code: 'custom', path: ['containers', i], message: `container "${name}" is listed twice` });
      seen.add(name);
    }
    // With a VI and no container list, the groups are checked against what inventory finds.
    if (plan.groups && plan.containers) {
      for (const problem of groupProblems(plan.groups, plan.containers)) ctx.addIssue({ code: 'custom', path: problem.path, message: problem.message });
    }
  });

function groupProblems(groups: string[][], containers: string[]): Array<{ path: Array<string | number>; message: string }> {
  const problems: Array<{ path: Array<string | number>; message: string }> = [];
  const grouped = new Set<string>();
  for (const [g, group] of groups.entries()) {
    for (const [i, name] of group.entries()) {
      if (!containers.includes(name)) problems.push({ path: ['groups', g, i], message: `container "${name}" is not among the containers moved (${containers.join(', ')})` });
      if (grouped.has(name)) problems.push({ path: ['groups', g, i], message: `container "${name}" is in two groups` });
      grouped.add(name);
    }
  }
  const missing = containers.filter((name) => !grouped.has(name));
  if (missing.length) problems.push({ path: ['groups'], message: `no group moves ${missing.join(', ')}` });
  return problems;
}

/**
 * The groups a plan moves, in order, once the containers to move are known (default: all of them
 * together). Throws a PlanError naming each problem when the plan's groups do not fit them.
 */
export function planGroups(plan: MigrationPlan, containers: string[]): string[][] {
  if (!plan.groups) return [containers];
  const problems = groupProblems(plan.groups, containers);
  if (problems.length) throw new PlanError(problems.map((p) => `${p.path.join('.')}: ${p.message}`));
  return plan.groups;
}

export type MigrationPlan = z.output<typeof migrationPlanSchema>;
export type MigrationPlanInput = z.input<typeof migrationPlanSchema>;

export class PlanError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid migration plan:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'PlanError';
  }
}

/** Validates untrusted input; throws a PlanError listing every problem with its path. */
export function parsePlan(input: unknown): MigrationPlan {
  const result = migrationPlanSchema.safeParse(input);
  if (result.success) return result.data;
  throw new PlanError(problemsOf(result.error, '(plan)'));
}

/** The migration's id in paths and names (its workflow id with anything but [A-Za-z0-9._-] made "_"). */
export function migrationIdOf(workflowId: string): string {
  return workflowId.replace(/[^A-Za-z0-9._-]/g, '_');
}

export function cloudTaskQueue(cloud: string): string {
  return `migravi.${cloud}`;
}

export const ORCHESTRATOR_TASK_QUEUE = 'migravi';

/**
 * The workflow-task timeout migrations and evacuations are started with: how long the server waits
 * for an orchestrator that took a workflow task and died before handing it to another. Inside a
 * freeze that wait is blackout; Temporal's default is 10 s, a migration's history replays in
 * milliseconds.
 */
export const MIGRATION_WORKFLOW_TASK_TIMEOUT = '5 seconds';
