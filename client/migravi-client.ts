/**
 * The client API for services that start migrations. The plan is validated here, at the edge,
 * with the same schema the workflow uses: a bad plan fails before anything is started.
 */
import { WorkflowNotFoundError, WorkflowUpdateFailedError, type Client, type WorkflowHandle } from '@temporalio/client';
import { MIGRATION_WORKFLOW_TASK_TIMEOUT, ORCHESTRATOR_TASK_QUEUE, parsePlan, type MigrationPlan } from '../lib/plan';
import type { CloudListing, MigrationProgress } from '../lib/types';
import { parseViSpec, type ViSpecInput } from '../lib/vi-spec';
import type { DeployOutcome, RemoveOutcome } from '../activities/deploy-vi';
import type { migrateInfrastructure, OperatorAnswer } from '../workflows';

export type MigrationHandle = WorkflowHandle<typeof migrateInfrastructure>;
export { connectClient, type TemporalAccess } from '../lib/temporal-access';
export { followMigration, liveProgress, runningTransfers, watchMigration, type LiveContainer, type LiveProgress, type LiveTransfer } from './live-progress';

export function migrationWorkflowId(plan: MigrationPlan, now = new Date()): string {
  return `migrate-${plan.name}-${now.toISOString().replace(/[-:]/g, '').replace(/\..*/, '')}`;
}

export async function startMigration(client: Client, planInput: unknown, opts: { workflowId?: string } = {}): Promise<MigrationHandle> {
  const plan = parsePlan(planInput);
  return client.workflow.start('migrateInfrastructure', {
    taskQueue: ORCHESTRATOR_TASK_QUEUE,
    workflowId: opts.workflowId ?? migrationWorkflowId(plan),
    workflowTaskTimeout: MIGRATION_WORKFLOW_TASK_TIMEOUT,
    args: [plan],
  }) as Promise<MigrationHandle>;
}

export async function queryProgress(handle: WorkflowHandle): Promise<MigrationProgress> {
  return handle.query<MigrationProgress>('progress');
}

/** The migration did not take an operator's request (approve, abort): the message says why. */
export class RequestRefusedError extends Error {}

/** Sends an operator's request as a Workflow Update: the answer says the migration took it; a refusal throws RequestRefusedError with its reason. */
async function request(handle: WorkflowHandle, update: 'approve' | 'abort', args: [string] | [] = []): Promise<OperatorAnswer> {
  try {
    return await (args.length ? handle.executeUpdate<OperatorAnswer, [string]>(update, { args }) : handle.executeUpdate<OperatorAnswer, []>(update));
  } catch (err) {
    if (err instanceof WorkflowUpdateFailedError) throw new RequestRefusedError(`${handle.workflowId} refused ${update}: ${err.cause?.message ?? err.message}`);
    // A closed workflow takes no update: the server refuses it before the workflow sees it.
    if (err instanceof WorkflowNotFoundError && /already completed/.test(err.message)) {
      const { status } = await handle.describe();
      throw new RequestRefusedError(`${handle.workflowId} refused ${update}: the migration has ${status.name === 'COMPLETED' ? 'completed' : `ended (${status.name.toLowerCase()})`} already`);
    }
    throw err;
  }
}

/** Lets a migration waiting for approval (options.approveCutover) freeze and move. */
export async function approveCutover(handle: WorkflowHandle): Promise<OperatorAnswer> {
  return request(handle, 'approve');
}

/** Asks the migration to stop and roll back; refused once it is past its commit point or rolling back already. */
export async function abortMigration(handle: WorkflowHandle, reason: string): Promise<OperatorAnswer> {
  return request(handle, 'abort', [reason]);
}

/**
 * For a migration "frozen-at-source": the operator has made sure no copy of the container runs
 * at the destination, so the source may resume it (docs/failure-model.md).
 */
export async function confirmDestinationGone(handle: WorkflowHandle): Promise<void> {
  await handle.signal('confirmDestinationGone');
}

/** Waits until the migration reports `state` (e.g. awaiting-approval). */
export async function waitForState(handle: WorkflowHandle, state: MigrationProgress['state'], timeoutMs = 120_000): Promise<MigrationProgress> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const progress = await queryProgress(handle).catch(() => undefined);
    if (progress?.state === state) return progress;
    if (progress && (progress.state === 'completed' || progress.state === 'failed')) {
      throw new Error(`migration ${handle.workflowId} is ${progress.state}${progress.error ? `: ${progress.error}` : ''}, not ${state}`);
    }
    if (Date.now() > deadline) throw new Error(`migration ${handle.workflowId} did not reach ${state} within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

function operationId(what: string, cloud: string): string {
  return `${what}-${cloud}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
}

/** What a cloud hosts — VIs, networks, containers and their state — as that cloud's worker reads it. */
export async function describeCloud(client: Client, cloud: string): Promise<CloudListing> {
  return client.workflow.execute('listCloud', { taskQueue: ORCHESTRATOR_TASK_QUEUE, workflowId: operationId('list', cloud), args: [cloud] }) as Promise<CloudListing>;
}

/**
 * Deploys a VI description into a cloud, through that cloud's worker. The description is validated
 * here first (a ViSpecError names every bad field before anything is sent); the cloud refuses
 * conflicts (names, addresses, MACs, overlapping subnets) before touching anything; deploying the
 * same description again changes nothing. The workflow id is derived from the cloud and the VI,
 * so two concurrent deploys of one VI into one cloud cannot race.
 */
export async function deployVi(client: Client, cloud: string, vi: ViSpecInput): Promise<DeployOutcome> {
  const spec = parseViSpec(vi);
  return client.workflow.execute('deployVi', {
    taskQueue: ORCHESTRATOR_TASK_QUEUE,
    workflowId: `deploy-${cloud}-${spec.name}`,
    args: [cloud, spec],
  }) as Promise<DeployOutcome>;
}

/** Removes a VI's containers, ports, rules and networks from a cloud; its volumes' files too when asked. */
export async function removeVi(client: Client, cloud: string, name: string, options: { deleteVolumes?: boolean } = {}): Promise<RemoveOutcome> {
  return client.workflow.execute('removeVi', { taskQueue: ORCHESTRATOR_TASK_QUEUE, workflowId: operationId(`remove-${name}`, cloud), args: [cloud, name, options] }) as Promise<RemoveOutcome>;
}
