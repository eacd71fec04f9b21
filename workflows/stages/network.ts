/**
 * Stage "network": the VI's private networks replicated at the destination and stretched between
 * the clouds (containers keep their addresses and open connections). Stage "release-networks",
 * at the end: what the VI left at the source goes.
 */
import { CancellationScope } from '@temporalio/workflow';
import type { Inventory } from '../../lib/types';
import type { Compensation } from '../saga';
import { phase, type MigrationContext } from './context';
import { describe } from './failures';
import { settleAll } from './settle-all';

/**
 * Each undo removes only what this migration created: an earlier migration's stretch stays.
 * The two sides are set up at once (neither needs the other's tunnel to exist); both finish
 * before a failure of either rolls back, and their undos are recorded in one order (the
 * source's unstretch runs first), whichever side finished first.
 */
export function joinNetworks(ctx: MigrationContext, inventory: Inventory, destination: { publicIp: string }): Promise<void> {
  const { plan, src, dst } = ctx;
  const { networks } = inventory;
  return phase(ctx, 'network', undefined, async () => {
    const undos: Compensation[][] = [[], []];
    try {
      await settleAll([
        async () => {
          const created = await dst.control.replicateNetworks({ networks });
          undos[0]!.push({ what: `remove the replicated networks at ${plan.destination}`, role: 'cleanup', cloud: plan.destination, activity: 'removeNetworks', input: { names: created } });
          const dstStretched = await dst.control.stretchNetworks({ networks, peerPublicIp: inventory.source.publicIp });
          undos[0]!.push({ what: `unstretch the networks at ${plan.destination}`, role: 'cleanup', cloud: plan.destination, activity: 'unstretchNetworks', input: { networks: dstStretched, peerPublicIp: inventory.source.publicIp } });
        },
        async () => {
          const srcStretched = await src.control.stretchNetworks({ networks, peerPublicIp: destination.publicIp });
          undos[1]!.push({ what: `unstretch the networks at ${plan.source}`, role: 'cleanup', cloud: plan.source, activity: 'unstretchNetworks', input: { networks: srcStretched, peerPublicIp: destination.publicIp } });
        },
      ], (side) => side());
    } finally {
      for (const undo of undos.flat()) ctx.saga.record(undo);
    }
  });
}

/**
 * The VI has left the source: the stretch goes, and the source's networks with their bridges (a
 * network something at the source still uses stays stretched). Past the commit: a failure is a
 * warning, never a rollback.
 */
export function releaseNetworks(ctx: MigrationContext, inventory: Inventory, destination: { publicIp: string }): Promise<void> {
  return CancellationScope.nonCancellable(() =>
    phase(ctx, 'release-networks', undefined, async () => {
      try {
        const released = await ctx.src.undo.releaseNetworks({ networks: inventory.networks, peerPublicIp: destination.publicIp });
        if (released.length) await ctx.dst.undo.unstretchNetworks({ networks: released, peerPublicIp: inventory.source.publicIp });
      } catch (err) {
        ctx.report.warnings.push(`could not release the networks at ${ctx.plan.source}: ${describe(err)}`);
      }
    }),
  );
}
