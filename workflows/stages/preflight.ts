/**
 * Stage "preflight": both hosts can checkpoint and restore, nothing at the destination collides
 * with the VI; then the source's containers are claimed (no other migration may take them).
 */
import type { Inventory } from '../../lib/types';
import { note, phase, type MigrationContext } from './context';

/** Returns the destination's answer (its public address, which the stretch needs). */
export function preflight(ctx: MigrationContext, inventory: Inventory): Promise<{ cloud: string; publicIp: string }> {
  return phase(ctx, 'preflight', undefined, async () => {
    const [, dstInfo] = await Promise.all([ctx.src.probe.preflight({ role: 'source', inventory }), ctx.dst.probe.preflight({ role: 'destination', inventory })]);
    const takenOver = await ctx.src.control.claimContainers(ctx.claim); // from here, no other migration may take these containers
    for (const stale of takenOver) note(ctx, `took over the stale claim on ${stale}`);
    return dstInfo;
  });
}
