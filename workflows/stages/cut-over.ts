/**
 * The blackout of one group: every member frozen (checkpoints in parallel), its image (and a
 * writable rootfs) sent a few at a time, every member restored in parallel — all within the
 * blackout budget. The group commits only when every member is restored (post-copy: when all of
 * its memory is in); until then a failure rolls the whole group back.
 */
import { ApplicationFailure } from '@temporalio/workflow';
import type { ArtifactReceipt, CheckpointResult, ContainerReport, PostCopyReport } from '../../lib/types';
import { on } from './activity-stubs';
import { countBytes, note, phase, type Member, type MigrationContext, type RootfsCopy, type VolumeCopy } from './context';
import { copyRootfs, copyVolumes, sendCheckpoint, volumeReport } from './copies';
import { wireBytesOfFailure } from './failures';
import { keepLeases, leaseEnds } from './leases';
import { awaitMemory } from './post-copy';
import { restoreMember, type RestoredMember } from './restore-member';
import { settleAll } from './settle-all';

/** What the transfer stage sent of one member. */
interface MemberSent {
  checkpointSent: ArtifactReceipt;
  rootfs: RootfsCopy;
  volumes?: VolumeCopy;
}

/** A frozen group's clock: what is left of its budget (under a second: the group rolls back). */
type Remaining = () => number;

/** Returns each member's report and the group's blackout. */
export async function cutOverGroup(ctx: MigrationContext, label: string, members: Member[], postCopy: boolean): Promise<{ reports: ContainerReport[]; frozenMs: number }> {
  const { plan } = ctx;
  const frozenFrom = Date.now();
  const deadline = frozenFrom + ctx.budgetMs;
  ctx.freezeDeadline = deadline;
  const remaining: Remaining = () => {
    const left = deadline - Date.now();
    if (left < 1000) throw ApplicationFailure.nonRetryable(`${label} stayed frozen for the whole blackout budget (${ctx.options.blackoutBudgetSeconds} s)`, 'BlackoutBudgetExceeded');
    return left;
  };
  for (const { step } of members) {
    ctx.saga.record({ what: `resume ${step.container.name} at ${plan.source}`, role: 'resume', cloud: plan.source, activity: 'resumeAtSource', input: { ...step, keepTcp: ctx.options.keepTcpConnections }, container: step.container.name });
  }
  const images = await phase(ctx, 'checkpoint', label, () => freeze(ctx, members, remaining, postCopy));
  await setUpDrain(ctx, label, members, remaining);
  const sent = await phase(ctx, 'transfer', label, () => transfer(ctx, members, images, remaining));
  for (const m of members) {
    ctx.saga.record({ what: `discard ${m.step.container.name} at ${plan.destination}`, role: 'fence', cloud: plan.destination, activity: 'discardContainer', input: m.step, required: () => m.restoreMayHaveStarted, leaseEnds: () => leaseEnds(m) });
  }
  ctx.leases = keepLeases(ctx, members);
  const restored = await phase(ctx, 'restore', label, () =>
    settleAll(members, (m, i) => {
      const postCopy = images[i]!.postCopy;
      return restoreMember(ctx, m, images[i]!.sentDir ?? images[i]!.imageDir, sent[i]!.checkpointSent, remaining, members.length, postCopy && { ...postCopy, holdUntilWindow: members.length > 1 });
    }),
  );
  const frozenMs = Date.now() - frozenFrom;
  const windows = postCopy ? await awaitGroupMemory(ctx, label, members, images, restored) : [];
  const reports = members.map((m, i) => memberReport(m, frozenFrom, images[i]!, sent[i]!, restored[i]!, windows[i]));
  return { reports, frozenMs };
}

/** Stage "checkpoint": each image streams to the destination while CRIU writes it (the checkpoint returns what it sent). */
function freeze(ctx: MigrationContext, members: Member[], remaining: Remaining, postCopy: boolean): Promise<CheckpointResult[]> {
  return settleAll(members, async (m) => {
    try {
      const image = await on(ctx.plan.source, { scheduleToCloseMs: remaining() }).checkpoint({ ...m.step, keepTcp: ctx.options.keepTcpConnections, endpoint: m.endpoint, postCopy, concurrent: members.length });
      countBytes(ctx, m.step.container.name, image.sent?.wireBytes ?? 0);
      if (image.sent?.resumedBytes) note(ctx, `${m.step.container.name}: checkpoint transfer resumed after a failed attempt; ${image.sent.resumedBytes} bytes were not sent again`);
      return image;
    } catch (err) {
      countBytes(ctx, m.step.container.name, wireBytesOfFailure(err));
      throw err;
    }
  });
}

/**
 * Stage "drain-setup": outside connections open through a floating IP are frozen now: their
 * replies, once the container runs at the destination, must leave through the source's edge
 * (which holds their NAT). Set up before the restore, while nothing can send.
 */
async function setUpDrain(ctx: MigrationContext, label: string, members: Member[], remaining: Remaining): Promise<void> {
  const { plan } = ctx;
  const publicMembers = members.filter((m) => m.step.container.floatingIp);
  if (ctx.options.drainTimeoutSeconds <= 0 || !publicMembers.length) return;
  await phase(ctx, 'drain-setup', label, () =>
    settleAll(publicMembers, async (m) => {
      m.connections = await on(plan.source, { scheduleToCloseMs: remaining() }).publicConnections(m.step);
      if (!m.connections.length) return;
      const input = { ...m.step, connections: [], peerPublicIp: ctx.sourcePublicIp };
      ctx.saga.record({ what: `stop routing ${m.step.container.name}'s drained replies at ${plan.destination}`, role: 'cleanup', cloud: plan.destination, activity: 'routeReplies', input });
      await on(plan.destination, { scheduleToCloseMs: remaining() }).routeReplies({ ...m.step, connections: m.connections, peerPublicIp: ctx.sourcePublicIp });
    }),
  );
}

/** Stage "transfer": what the checkpoint did not stream, a writable rootfs, and the volumes' final round — a few members at a time. */
async function transfer(ctx: MigrationContext, members: Member[], images: CheckpointResult[], remaining: Remaining): Promise<MemberSent[]> {
  const { plan } = ctx;
  ctx.progress.transferTotalBytes = images.reduce((sum, image) => sum + image.imageBytes, 0);
  const result = await settleAll(members, async (m, i) => {
    const checkpointSent = images[i]!.sent ?? (await sendCheckpoint(ctx, m.step, m.endpoint, images[i]!.imageDir, remaining()));
    const frozenStubs = { src: on(plan.source, { scheduleToCloseMs: remaining() }), dst: on(plan.destination, { scheduleToCloseMs: remaining() }) };
    const rootfs = m.preCopied ?? (await copyRootfs(ctx, m.step, m.endpoint, frozenStubs));
    m.resends += rootfs.resends;
    // Only what the container wrote since the pre round: the blackout does not grow with the volume.
    const volumes = m.preVolumes ? await copyVolumes(ctx, m.step, m.endpoint, 'final', frozenStubs) : undefined;
    return { checkpointSent, rootfs, volumes };
  }, ctx.options.parallelTransfers);
  ctx.progress.transferTotalBytes = undefined;
  return result;
}

/**
 * Post-copy: the group runs at the destination; its memory follows from the source's image.
 * The group commits only once every page is in: until then a failure rolls it back.
 */
async function awaitGroupMemory(ctx: MigrationContext, label: string, members: Member[], images: CheckpointResult[], restored: RestoredMember[]): Promise<Array<PostCopyReport | undefined>> {
  try {
    return await phase(ctx, 'post-copy', label, () => settleAll(members, (m, i) => (images[i]!.postCopy ? awaitMemory(ctx, m, images[i]!.postCopy!) : Promise.resolve(undefined))));
  } catch (err) {
    // Every member already runs at the destination: a rollback restarts each from its image of the freeze.
    for (const [i, m] of members.entries()) {
      note(ctx, `${m.step.container.name} ran at ${ctx.plan.destination} for ${Date.now() - restored[i]!.restoredAt} ms after its restore: a rollback now loses what it did there (its source copy restarts from the image taken at the freeze)`);
    }
    throw err;
  }
}

function memberReport(m: Member, frozenFrom: number, image: CheckpointResult, sent: MemberSent, restored: RestoredMember, window: PostCopyReport | undefined): ContainerReport {
  return {
    name: m.step.container.name,
    frozenMs: restored.restoredAt - frozenFrom,
    checkpointMs: image.durationMs,
    restoreMs: restored.restored.durationMs,
    imageBytes: image.imageBytes,
    artifacts: [sent.rootfs.sent, restored.image],
    checks: [sent.rootfs.check, ...(m.preVolumes?.checks ?? []), ...(sent.volumes?.checks ?? []), restored.restored.check],
    resends: m.resends,
    ...(m.preVolumes && sent.volumes ? { volumes: volumeReport(m.preVolumes, sent.volumes) } : {}),
    ...(window ? { postCopy: window } : {}),
    ...(m.step.container.floatingIp ? { floatingIp: { source: m.step.container.floatingIp.address, destination: restored.restored.floatingIp } } : {}),
  };
}
