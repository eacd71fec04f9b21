/**
 * Stage "release" of a committed group: its source copies, ports and images go, and the
 * destination drops what it received. Past the commit nothing is undone: a failure here is a
 * warning in the report, never a rollback.
 */
import { CancellationScope, log } from '@temporalio/workflow';
import { phase, type Member, type MigrationContext } from './context';
import { describe } from './failures';
import { settleAll } from './settle-all';

export async function releaseGroup(ctx: MigrationContext, label: string, members: Member[]): Promise<void> {
  await CancellationScope.nonCancellable(() =>
    phase(ctx, 'release', label, () =>
      settleAll(members, async ({ step, connections }) => {
        try {
          // While its outside connections drain, the old floating IP stays (see drain.ts).
          const draining = (connections?.length ?? 0) > 0;
          await Promise.all([ctx.src.undo.releaseSource({ ...step, keepFloatingIp: draining }), ctx.dstCleanup.cleanupReceived(step)]);
        } catch (err) {
          ctx.report.warnings.push(`could not release ${step.container.name} at ${ctx.plan.source}: ${describe(err)}`);
          log.warn('release failed after commit', { container: step.container.name, error: describe(err) });
        }
      }),
    ),
  );
}
