/**
 * Stage "drain": outside connections open through the old floating IPs are forwarded (over the
 * stretched network) until they close or the drain times out; then the old addresses go.
 */
import { CancellationScope, sleep } from '@temporalio/workflow';
import type { PublicConnection } from '../../lib/types';
import { note, phase, type MigrationContext } from './context';
import { describe } from './failures';

/** Connections of `before` still in `now` (same client address and port). */
function stillOpen(before: PublicConnection[], now: PublicConnection[]): number {
  return before.filter((b) => now.some((n) => n.client === b.client && n.clientPort === b.clientPort)).length;
}

export async function drainConnections(ctx: MigrationContext): Promise<void> {
  const { draining } = ctx;
  if (!draining.length) return;
  await CancellationScope.nonCancellable(() =>
    phase(ctx, 'drain', undefined, async () => {
      const started = Date.now();
      const deadline = started + ctx.options.drainTimeoutSeconds * 1000;
      let open = draining.map((m) => ({ m, left: m.connections!.length }));
      while (open.some((o) => o.left > 0) && Date.now() < deadline) {
        await sleep(Math.min(1000, Math.max(1, deadline - Date.now())));
        open = await Promise.all(open.map(async (o) => ({ m: o.m, left: o.left > 0 ? stillOpen(o.m.connections!, await ctx.src.undo.publicConnections(o.m.step)) : 0 })));
      }
      for (const { m, left } of open) {
        const report = ctx.report.containers.find((c) => c.name === m.step.container.name);
        if (report) report.drain = { connections: m.connections!.length, closed: m.connections!.length - left, ms: Date.now() - started };
        note(ctx, `${m.step.container.name}: ${m.connections!.length} outside connection(s) drained through ${ctx.plan.source}'s old address, ${left} still open at the end`);
      }
      await endDrains(ctx);
    }),
  );
}

/** Releases the old floating IPs of drained containers and stops routing their traffic back (each once). */
export async function endDrains(ctx: MigrationContext): Promise<void> {
  for (const m of ctx.draining.splice(0)) {
    try {
      await ctx.src.undo.releasePublicAddress(m.step);
      await ctx.dstCleanup.routeReplies({ ...m.step, connections: [], peerPublicIp: ctx.sourcePublicIp });
    } catch (err) {
      ctx.report.warnings.push(`could not end the drain of ${m.step.container.name}: ${describe(err)}`);
    }
  }
}
