/**
 * Evacuation of a cloud: each VI it hosts (or each the plan names) moves to the destination as a
 * child migration of its own (`migrateInfrastructure`, id `<evacuation>-<vi>`), a few at a time.
 * One VI that fails is rolled back by its own migration and reported; the others go on. Started
 * by hand (`migravi evacuate`) or by a Temporal Schedule (`migravi schedule`). A durable workflow:
 * an orchestrator that dies meanwhile is replaced and the evacuation resumes where it was.
 */
import { ApplicationFailure, ChildWorkflowFailure, defineQuery, executeChild, proxyActivities, setHandler, workflowInfo } from '@temporalio/workflow';
import type { CloudActivities } from '../activities/cloud-activities';
import { EvacuationPlanError, migrationPlanFor, parseEvacuationPlan, type EvacuationPlan, type EvacuationProgress, type EvacuationReport } from '../lib/evacuation';
import { cloudTaskQueue, MIGRATION_WORKFLOW_TASK_TIMEOUT } from '../lib/plan';
import type { MigrationReport } from '../lib/types';
import { migrateInfrastructure } from './migrate-infrastructure';

export const evacuationProgressQuery = defineQuery<EvacuationProgress>('progress');

export async function evacuateCloud(input: unknown): Promise<EvacuationReport> {
  const plan = validPlan(input);
  const startedAt = Date.now();
  const progress: EvacuationProgress = { state: 'listing', waiting: [], moving: [], report: { source: plan.source, destination: plan.destination, startedAt, moved: [], rolledBack: [], skipped: [] } };
  setHandler(evacuationProgressQuery, () => progress);
  const { report } = progress;

  const hosted = await visHostedBy(plan.source);
  const wanted = plan.vis ?? hosted;
  for (const vi of wanted.filter((v) => !hosted.includes(v))) report.skipped.push({ vi, reason: `${plan.source} hosts no VI ${vi}${hosted.length ? ` (it hosts ${hosted.join(', ')})` : ''}` });
  progress.waiting = wanted.filter((v) => hosted.includes(v));
  progress.state = 'moving';

  // A few migrations at once: each lane takes the next VI when its migration has ended.
  const lanes = Array.from({ length: Math.min(plan.concurrency, progress.waiting.length) }, async () => {
    for (let vi = progress.waiting.shift(); vi !== undefined; vi = progress.waiting.shift()) await moveOne(plan, vi, progress);
  });
  await Promise.all(lanes);
  progress.state = 'completed';
  report.moved.sort((a, b) => a.vi.localeCompare(b.vi));
  report.rolledBack.sort((a, b) => a.vi.localeCompare(b.vi));
  return { ...report, wallMs: Date.now() - startedAt };
}

function validPlan(input: unknown): EvacuationPlan {
  try {
    return parseEvacuationPlan(input);
  } catch (err) {
    if (err instanceof EvacuationPlanError) throw ApplicationFailure.nonRetryable(err.message, 'InvalidPlan');
    throw err;
  }
}

/** The VIs a cloud hosts, as its worker lists them (containers that belong to a VI). */
async function visHostedBy(cloud: string): Promise<string[]> {
  const { describeCloud } = proxyActivities<CloudActivities>({
    taskQueue: cloudTaskQueue(cloud),
    scheduleToStartTimeout: '30 seconds', // nobody answers for a cloud without a worker: say so
    startToCloseTimeout: '30 seconds',
    retry: { maximumAttempts: 3 },
  });
  const listing = await describeCloud({});
  return [...new Set(listing.containers.flatMap((c) => (c.vi ? [c.vi] : [])))].sort();
}

async function moveOne(plan: EvacuationPlan, vi: string, progress: EvacuationProgress): Promise<void> {
  const workflowId = `${workflowInfo().workflowId}-${vi}`;
  progress.moving.push({ vi, workflowId });
  try {
    const result: MigrationReport = await executeChild(migrateInfrastructure, {
      workflowId,
      workflowTaskTimeout: MIGRATION_WORKFLOW_TASK_TIMEOUT,
      args: [migrationPlanFor(plan, vi)],
      // Cancelling the evacuation asks each running migration for its clean rollback.
      parentClosePolicy: 'REQUEST_CANCEL',
    });
    progress.report.moved.push({ vi, workflowId, wallMs: result.wallMs, frozenMs: Math.max(0, ...result.groups.map((g) => g.frozenMs)) });
  } catch (err) {
    if (!(err instanceof ChildWorkflowFailure)) throw err;
    progress.report.rolledBack.push({ vi, workflowId, reason: err.cause?.message ?? err.message });
  } finally {
    progress.moving = progress.moving.filter((m) => m.vi !== vi);
  }
}
