/**
 * The migration workflow: deterministic orchestration only. It decides the order of the phases,
 * routes each activity to the worker that lives in the right cloud (one task queue per cloud),
 * records a compensation before every step that changes something, and exposes progress.
 *
 * Commit point: a container is committed once it has been restored at the destination. Before
 * that, any failure rolls everything back and the VI runs at the source again; after it, the
 * source copy is released and failures no longer undo the move.
 */
import {
  ActivityFailure,
  ApplicationFailure,
  condition,
  defineQuery,
  defineSignal,
  log,
  proxyActivities,
  type RetryPolicy,
  setHandler,
  TimeoutFailure,
  workflowInfo,
} from '@temporalio/workflow';
import type { CloudActivities, ContainerStep } from '../activities/cloud-activities';
import { cloudTaskQueue, parsePlan, PlanError, type MigrationPlan } from '../lib/plan';
import type { ContainerReport, MigrationProgress, MigrationReport, PhaseTiming } from '../lib/types';

export const progressQuery = defineQuery<MigrationProgress>('progress');
/** Operator: go ahead with the freeze (plans with options.approveCutover). */
export const approveCutoverSignal = defineSignal('approveCutover');
/** Operator: stop before the commit point and roll back. Takes effect between steps. */
export const abortSignal = defineSignal<[reason?: string]>('abort');

/** Activities of one cloud, called through that cloud's task queue. */
function cloudActivities(cloud: string, plan: MigrationPlan) {
  const queue = cloudTaskQueue(cloud);
  const retry: RetryPolicy = { initialInterval: '1s', backoffCoefficient: 2, maximumAttempts: 3 };
  // Every activity heartbeats every 2 s (activities/heartbeat.ts): a dead worker is noticed in 20 s.
  const heartbeatTimeout = '20 seconds';
  const control = proxyActivities<CloudActivities>({ taskQueue: queue, startToCloseTimeout: '5 minutes', heartbeatTimeout, retry });
  // The first calls also tell whether the cloud's worker is there at all: fail fast, don't wait forever.
  const probe = proxyActivities<CloudActivities>({ taskQueue: queue, startToCloseTimeout: '2 minutes', scheduleToCloseTimeout: '3 minutes', heartbeatTimeout, retry });
  const transfer = proxyActivities<CloudActivities>({
    taskQueue: queue,
    startToCloseTimeout: `${plan.options.transferTimeoutSeconds} seconds`,
    heartbeatTimeout,
    retry,
  });
  const once = proxyActivities<CloudActivities>({ taskQueue: queue, startToCloseTimeout: '5 minutes', heartbeatTimeout, retry: { maximumAttempts: 2 } });
  return {
    inventory: probe.inventory,
    preflight: probe.preflight,
    replicateNetworks: control.replicateNetworks,
    removeNetworks: control.removeNetworks,
    stretchNetworks: control.stretchNetworks,
    unstretchNetworks: control.unstretchNetworks,
    prepareReceive: control.prepareReceive,
    preparePort: control.preparePort,
    removePort: control.removePort,
    sendRootfs: transfer.sendRootfs,
    receiveRootfs: control.receiveRootfs,
    sendCheckpoint: transfer.sendCheckpoint,
    checkpoint: once.checkpoint,
    restore: once.restore,
    discardContainer: control.discardContainer,
    restoreAtSource: control.restoreAtSource,
    releaseSource: control.releaseSource,
    claimContainers: control.claimContainers,
    releaseClaims: control.releaseClaims,
    cleanupReceived: control.cleanupReceived,
  };
}

function describe(err: unknown): string {
  if (err instanceof ActivityFailure) {
    if (err.cause instanceof TimeoutFailure) {
      return `${err.activityType} timed out (${err.cause.timeoutType}): is the worker of that cloud running and reachable?`;
    }
    return `${err.activityType} failed: ${err.cause?.message ?? err.message}`;
  }
  return err instanceof Error ? err.message : String(err);
}

export async function migrateInfrastructure(input: unknown): Promise<MigrationReport> {
  let plan: MigrationPlan;
  try {
    plan = parsePlan(input);
  } catch (err) {
    if (err instanceof PlanError) throw ApplicationFailure.nonRetryable(err.message, 'InvalidPlan');
    throw err;
  }
  const migrationId = workflowInfo().workflowId.replace(/[^A-Za-z0-9._-]/g, '_');
  const src = cloudActivities(plan.source, plan);
  const dst = cloudActivities(plan.destination, plan);
  const keepTcp = plan.options.keepTcpConnections;

  const startedAt = Date.now();
  const phases: PhaseTiming[] = [];
  const progress: MigrationProgress = { state: 'running', phase: 'starting', phases, bytesMoved: 0 };
  setHandler(progressQuery, () => progress);
  let approved = !plan.options.approveCutover;
  let abortReason: string | undefined;
  setHandler(approveCutoverSignal, () => {
    approved = true;
  });
  setHandler(abortSignal, (reason) => {
    abortReason = reason || 'aborted by the operator';
  });
  let committed = 0;
  const throwIfAborted = () => {
    if (abortReason !== undefined && committed === 0) throw ApplicationFailure.nonRetryable(abortReason, 'Aborted');
  };

  async function phase<T>(name: string, container: string | undefined, step: () => Promise<T>): Promise<T> {
    throwIfAborted();
    progress.phase = name;
    progress.container = container;
    const begin = Date.now();
    try {
      return await step();
    } finally {
      phases.push({ phase: name, ...(container ? { container } : {}), startedAt: begin, durationMs: Date.now() - begin });
    }
  }

  // Undo steps, newest last; run in reverse on failure before the commit point.
  const compensations: Array<{ what: string; undo: () => Promise<unknown> }> = [];
  const claim = { migrationId, containers: plan.containers };
  const containers: ContainerReport[] = [];
  const warnings: string[] = [];

  try {
    const inventory = await phase('inventory', undefined, () => src.inventory({ containers: plan.containers }));
    const destination = await phase('preflight', undefined, async () => {
      const [, dstInfo] = await Promise.all([src.preflight({ role: 'source', inventory }), dst.preflight({ role: 'destination', inventory })]);
      await src.claimContainers(claim); // from here, no other migration may take these containers
      return dstInfo;
    });
    const { networks } = inventory;

    // Each undo removes only what this migration created: an earlier migration's stretch stays.
    await phase('network', undefined, async () => {
      const created = await dst.replicateNetworks({ networks });
      compensations.push({ what: 'remove replicated networks', undo: () => dst.removeNetworks({ names: created }) });
      const dstStretched = await dst.stretchNetworks({ networks, peerPublicIp: inventory.source.publicIp });
      compensations.push({ what: 'unstretch destination', undo: () => dst.unstretchNetworks({ networks: dstStretched, peerPublicIp: inventory.source.publicIp }) });
      const srcStretched = await src.stretchNetworks({ networks, peerPublicIp: destination.publicIp });
      compensations.push({ what: 'unstretch source', undo: () => src.unstretchNetworks({ networks: srcStretched, peerPublicIp: destination.publicIp }) });
    });

    for (const container of inventory.containers) {
      const step: ContainerStep = { migrationId, container };
      const name = container.name;
      const endpoint = await phase('prepare', name, async () => {
        compensations.push({ what: `remove ${name}'s port and files at destination`, undo: async () => {
          await dst.removePort(step);
          await dst.cleanupReceived(step);
        } });
        await dst.preparePort(step);
        return dst.prepareReceive(step);
      });
      const sendRootfs = async () => {
        const sent = await src.sendRootfs({ ...step, endpoint });
        progress.bytesMoved += sent.bytes;
        await dst.receiveRootfs({ ...step, artifact: sent });
        return sent;
      };
      // A read-only rootfs is copied while the container runs; a writable one can still change,
      // so it is copied after the freeze, inside the blackout.
      const preCopied = container.readonlyRootfs ? await phase('pre-copy', name, sendRootfs) : undefined;
      if (!approved) {
        progress.state = 'awaiting-approval';
        progress.phase = 'awaiting approval';
        await condition(() => approved || abortReason !== undefined);
        progress.state = 'running';
        throwIfAborted();
      }
      compensations.push({ what: `resume ${name} at source`, undo: () => src.restoreAtSource({ ...step, keepTcp }) });
      const frozenFrom = Date.now();
      const image = await phase('checkpoint', name, () => src.checkpoint({ ...step, keepTcp }));
      const { checkpointArtifact, rootfs } = await phase('transfer', name, async () => {
        progress.transferTotalBytes = image.imageBytes;
        const sent = await src.sendCheckpoint({ ...step, endpoint, imageDir: image.imageDir });
        progress.transferTotalBytes = undefined;
        progress.bytesMoved += sent.bytes;
        return { checkpointArtifact: sent, rootfs: preCopied ?? (await sendRootfs()) };
      });
      compensations.push({ what: `discard ${name} at destination`, undo: () => dst.discardContainer(step) });
      const restored = await phase('restore', name, () => dst.restore({ ...step, image: checkpointArtifact, keepTcp }));
      const frozenMs = Date.now() - frozenFrom;

      // Committed: this container lives at the destination now, and the stretched network must
      // stay for it. Nothing done so far is to be undone any more.
      compensations.length = 0;
      committed++;
      containers.push({
        name,
        frozenMs,
        checkpointMs: image.durationMs,
        restoreMs: restored.durationMs,
        verifyMs: restored.verifyMs,
        verifiedBytes: restored.verifiedBytes,
        imageBytes: image.imageBytes,
        artifacts: [rootfs, checkpointArtifact],
      });

      await phase('release', name, async () => {
        try {
          await Promise.all([src.releaseSource(step), dst.cleanupReceived(step)]);
        } catch (err) {
          warnings.push(`could not release ${name} at ${plan.source}: ${describe(err)}`);
          log.warn('release failed after commit', { container: name, error: describe(err) });
        }
      });
    }
  } catch (err) {
    const reason = describe(err);
    progress.state = 'compensating';
    progress.error = reason;
    log.error('migration failed, rolling back', { reason, compensations: compensations.length });
    const undoFailures: string[] = [];
    for (const { what, undo } of compensations.reverse()) {
      progress.phase = `rollback: ${what}`;
      try {
        await undo();
      } catch (undoErr) {
        undoFailures.push(`${what}: ${describe(undoErr)}`);
      }
    }
    // Containers not committed are free again (a committed one's claim went with its release).
    await src.releaseClaims(claim).catch((undoErr: unknown) => undoFailures.push(`release the claims: ${describe(undoErr)}`));
    progress.state = 'failed';
    const moved = containers.map((c) => c.name);
    const where = moved.length
      ? `${moved.join(', ')} stay${moved.length === 1 ? 's' : ''} at ${plan.destination} (committed); the rest runs at the source`
      : 'the VI runs at the source';
    const suffix = undoFailures.length ? `\nrollback incomplete:\n- ${undoFailures.join('\n- ')}` : `\nrolled back: ${where}`;
    throw ApplicationFailure.nonRetryable(`migration ${plan.name} failed: ${reason}${suffix}`, 'MigrationFailed');
  }

  progress.state = 'completed';
  progress.phase = 'done';
  if (warnings.length) log.warn('migration completed with warnings', { warnings });
  return {
    plan: plan.name,
    source: plan.source,
    destination: plan.destination,
    startedAt,
    wallMs: Date.now() - startedAt,
    phases,
    containers,
    bytesMoved: progress.bytesMoved,
    warnings,
  };
}
