/**
 * One group's move, stage by stage: prepare → pre-copy → predict → approval → cut-over (freeze,
 * transfer, restore, post-copy) → redirect → commit → release. Before its commit any failure
 * rolls the group back (and every group not committed yet); after it, nothing of it is undone.
 */
import type { ContainerStep } from '../../activities/cloud-activities';
import type { Inventory } from '../../lib/types';
import { markContainers, type MigrationContext } from './context';
import { recordGroup } from './metrics';
import { cutOverGroup } from './cut-over';
import { commitCopies } from './leases';
import { awaitApproval, predictGroup } from './predict';
import { prepareGroup } from './prepare';
import { recordDnsUndo, redirectGroup } from './redirect';
import { releaseGroup } from './release';

export async function moveGroup(ctx: MigrationContext, inventory: Inventory, names: string[]): Promise<void> {
  const label = names.join(',');
  const steps: ContainerStep[] = names.map((name) => ({ migrationId: ctx.migrationId, container: inventory.containers.find((c) => c.name === name)! }));
  const dnsSwitch = recordDnsUndo(ctx, steps);
  const members = await prepareGroup(ctx, label, steps);
  const { predicted, linkProbeBytes, mode } = await predictGroup(ctx, label, members);
  await awaitApproval(ctx);
  const group = await cutOverGroup(ctx, label, members, mode.postCopy);
  await redirectGroup(ctx, label, steps, group.reports, dnsSwitch);

  // The commit point: each copy stays for good (its lease stops); one whose lease ran out was
  // killed, and the group rolls back. Then the group lives at the destination, and the
  // stretched network must stay for it. Nothing done so far is to be undone any more.
  await commitCopies(ctx, members);
  ctx.saga.commit();
  markContainers(ctx, names, 'moved');
  ctx.freezeDeadline = undefined;
  ctx.report.containers.push(...group.reports);
  ctx.report.groups.push({ containers: names, frozenMs: group.frozenMs, predicted, linkProbeBytes, mode: mode.postCopy ? 'post-copy' : 'streamed', modeReason: mode.reason });
  recordGroup(ctx, group, group.reports);
  ctx.draining.push(...members.filter((m) => m.connections?.length));
  await releaseGroup(ctx, label, members);
}
