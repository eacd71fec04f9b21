/**
 * How the workflow reaches a cloud: the activities of its worker (task queue "migravi.<cloud>"),
 * each call bounded in time. Every kind of step gets its stub here, so a stage names the kind of
 * step it runs, not its timeouts.
 */
import { proxyActivities, type ActivityOptions } from '@temporalio/workflow';
import type { CloudActivities } from '../../activities/cloud-activities';
import { cloudTaskQueue, type MigrationPlan } from '../../lib/plan';
import { DEAD_WORKER_MS } from '../saga';

/**
 * A worker that stops heartbeating is given up after this long. Activities beat on progress and
 * give themselves up after 5 s without it (activities/attempt.ts), so this only catches dead workers.
 */
const HEARTBEAT_TIMEOUT = '8 seconds';

/** Activities of one cloud with the given time budget (every step is bounded). */
export function on(cloud: string, opts: Partial<ActivityOptions> & { scheduleToCloseMs: number }): CloudActivities {
  const { scheduleToCloseMs, ...rest } = opts;
  return proxyActivities<CloudActivities>({
    taskQueue: cloudTaskQueue(cloud),
    scheduleToCloseTimeout: Math.max(1000, Math.round(scheduleToCloseMs)),
    heartbeatTimeout: HEARTBEAT_TIMEOUT,
    // A cancelled step has stopped before the compensations start (never two at work at once).
    cancellationType: 'WAIT_CANCELLATION_COMPLETED',
    retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '4s' },
    ...rest,
  });
}

/** The bounded stubs of one side of the migration, per kind of step. */
export interface CloudStubs {
  /** Reads and checks (inventory, pre-flight, measurements): a minute. */
  probe: CloudActivities;
  /** Control-plane changes (claims, networks, ports): two minutes. */
  control: CloudActivities;
  /** Copies made while the containers run: the plan's transfer timeout. */
  precopy: CloudActivities;
  /** Undos and releases: the plan's rollback timeout. */
  undo: CloudActivities;
}

export function cloudStubs(cloud: string, options: MigrationPlan['options']): CloudStubs {
  return {
    probe: on(cloud, { scheduleToCloseMs: 60_000 }),
    control: on(cloud, { scheduleToCloseMs: 120_000 }),
    precopy: on(cloud, { scheduleToCloseMs: options.transferTimeoutSeconds * 1000 }),
    undo: on(cloud, { scheduleToCloseMs: options.rollbackTimeoutSeconds * 1000 }),
  };
}

/** Clean-up at a cloud once nothing waits on it: a worker that is down is said to be so in seconds, not retried for minutes. */
export function cleanupStub(cloud: string, options: MigrationPlan['options']): CloudActivities {
  return on(cloud, { scheduleToCloseMs: options.rollbackTimeoutSeconds * 1000, scheduleToStartTimeout: DEAD_WORKER_MS });
}
