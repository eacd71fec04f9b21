/**
 * A restored copy's lease (providers/runtime/fence-timer.ts): a timer beside the copy, outside
 * its worker, kills it at the lease's end unless its group commits. The workflow renews the
 * leases while it hears from the destination and stops them at the commit; a rollback whose
 * destination died relies on their end (workflows/saga.ts).
 */
import { condition, isCancellation } from '@temporalio/workflow';
import { DEAD_WORKER_MS } from '../saga';
import { on } from './activity-stubs';
import type { Member, MigrationContext } from './context';
import { failureType, neverStarted } from './failures';
import { settleAll } from './settle-all';

/**
 * How long a copy lives after the last renewal that may have reached its cloud. Longer than the
 * orchestrator takes to come back after a crash (the workflow-task timeout: 5 s, 10 s by default): a good
 * copy must outlive that.
 */
export const LEASE_MS = 15_000;
/** How often the workflow renews the leases of a group being restored (each renewal waits this long at most). */
const LEASE_RENEW_MS = 3_000;
/** Allowance for the clocks of the orchestrator and a destination host, before a lease is taken as ended. */
export const LEASE_CLOCK_MARGIN_MS = 1_000;

/**
 * Renews the leases of the group's restored copies while the workflow hears from their cloud.
 * A renewal that no worker took is known not to have arrived; one that was taken may have, and
 * counts (the lease then ends later than the workflow can be sure of otherwise).
 */
export function keepLeases(ctx: MigrationContext, members: Member[]): { stop(): void } {
  let stopped = false;
  const renew = async (m: Member) => {
    const before = m.leaseUntil!;
    const until = Date.now() + LEASE_MS;
    m.leaseUntil = Math.max(before, until);
    try {
      await on(ctx.plan.destination, { scheduleToCloseMs: LEASE_RENEW_MS, scheduleToStartTimeout: LEASE_RENEW_MS, retry: { maximumAttempts: 1 } }).renewFence({ migrationId: ctx.migrationId, containerName: m.step.container.name, until });
    } catch (err) {
      if (neverStarted(err)) m.leaseUntil = before;
    }
  };
  void (async () => {
    try {
      while (!(await condition(() => stopped, LEASE_RENEW_MS))) {
        await Promise.all(members.filter((m) => m.leaseUntil !== undefined && !m.disarmStarted).map(renew));
      }
    } catch (err) {
      if (!isCancellation(err)) throw err; // an abort: the rollback takes over
    }
  })();
  return { stop: () => (stopped = true) };
}

/** When a member's lease surely ended (for its fence), or undefined when no lease can be relied on. */
export function leaseEnds(m: Member): number | undefined {
  return m.leaseUntil === undefined || m.disarmStarted ? undefined : m.leaseUntil + LEASE_CLOCK_MARGIN_MS;
}

/** The commit of a restored group at its destination: every copy's lease stops, or the group rolls back. */
export async function commitCopies(ctx: MigrationContext, members: Member[]): Promise<void> {
  try {
    await settleAll(members, async (m) => {
      m.disarmStarted = true;
      try {
        await on(ctx.plan.destination, { scheduleToCloseMs: LEASE_MS, scheduleToStartTimeout: DEAD_WORKER_MS }).disarmFence(m.step);
      } catch (err) {
        // Not taken by any worker, or its lease had run out (the copy was killed): its lease still tells.
        if (neverStarted(err) || failureType(err) === 'FenceExpired') m.disarmStarted = false;
        throw err;
      }
    });
  } finally {
    stopLeases(ctx);
  }
}

/** No more renewals (from here the leases only run out, or were stopped by the commit). */
export function stopLeases(ctx: MigrationContext): void {
  ctx.leases?.stop();
  ctx.leases = undefined;
}
