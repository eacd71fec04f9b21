/**
 * The copies a group's move is made of — root filesystem, volumes, checkpoint image — each checked
 * at the destination (digests recomputed there) and sent again when it arrived corrupt. Every
 * byte written to the link counts in the progress, failed attempts' included.
 */
import type { CloudActivities, ContainerStep } from '../../activities/cloud-activities';
import type { ArtifactReceipt, TransferEndpoint, VolumeReceipt, VolumeReport } from '../../lib/types';
import { on } from './activity-stubs';
import { countBytes, note, type MigrationContext, type RootfsCopy, type VolumeCopy } from './context';
import { mismatch, wireBytesOfFailure } from './failures';

/** How many times an artifact that arrived corrupt is sent again before the migration gives up. */
export const MAX_RESENDS = 2;

/** Stubs of both sides for one kind of copy (while running: the transfer timeout; frozen: what is left of the budget). */
export interface CopyStubs {
  src: CloudActivities;
  dst: CloudActivities;
}

/** Sends the checkpoint (again, for `only` files) within the blackout budget. */
export async function sendCheckpoint(ctx: MigrationContext, step: ContainerStep, endpoint: TransferEndpoint, imageDir: string, remainingMs: number, only?: string[]): Promise<ArtifactReceipt> {
  try {
    const sent = await on(ctx.plan.source, { scheduleToCloseMs: remainingMs }).sendCheckpoint({ ...step, endpoint, imageDir, ...(only ? { only } : {}) });
    countBytes(ctx, step.container.name, sent.wireBytes);
    if (sent.resumedBytes > 0) note(ctx, `${step.container.name}: checkpoint transfer resumed after a failed attempt; ${sent.resumedBytes} bytes were not sent again`);
    return sent;
  } catch (err) {
    countBytes(ctx, step.container.name, wireBytesOfFailure(err));
    throw err;
  }
}

/** Pre-copy or in-freeze copy of the rootfs: sent, re-hashed and unpacked at the destination; resent if corrupt. */
export async function copyRootfs(ctx: MigrationContext, step: ContainerStep, endpoint: TransferEndpoint, stubs: CopyStubs): Promise<RootfsCopy> {
  for (let resends = 0; ; resends++) {
    let sent: ArtifactReceipt;
    try {
      sent = await stubs.src.sendRootfs({ ...step, endpoint });
    } catch (err) {
      countBytes(ctx, step.container.name, wireBytesOfFailure(err));
      throw err;
    }
    countBytes(ctx, step.container.name, sent.wireBytes);
    try {
      const check = await stubs.dst.receiveRootfs({ ...step, artifact: sent });
      return { sent, check, resends };
    } catch (err) {
      if (!mismatch(err) || resends >= MAX_RESENDS) throw err;
      note(ctx, `${step.container.name}: rootfs arrived corrupt (${mismatch(err)!.problems.join('; ')}); sending it again`);
    }
  }
}

/** One round of a container's volumes: sent by the source, applied and re-hashed by the destination. */
export async function copyVolumes(ctx: MigrationContext, step: ContainerStep, endpoint: TransferEndpoint, round: 'pre' | 'final', stubs: CopyStubs): Promise<VolumeCopy> {
  const started = Date.now();
  const receipts = await stubs.src.sendVolumes({ ...step, endpoint, round });
  countBytes(ctx, step.container.name, receipts.reduce((sum, r) => sum + r.wireBytes, 0));
  const checks = await stubs.dst.receiveVolumes({ ...step, receipts });
  return { receipts, checks, ms: Date.now() - started };
}

export function volumeReport(pre: VolumeCopy, final: VolumeCopy): VolumeReport {
  const sum = (rs: VolumeReceipt[], f: (r: VolumeReceipt) => number) => rs.reduce((s, r) => s + f(r), 0);
  return {
    volumes: pre.receipts.length,
    preBytes: sum(pre.receipts, (r) => r.bytes),
    preEntries: sum(pre.receipts, (r) => r.changedEntries),
    finalBytes: sum(final.receipts, (r) => r.bytes),
    finalEntries: sum(final.receipts, (r) => r.changedEntries),
    deletedEntries: sum(final.receipts, (r) => r.deletedEntries),
    finalMs: final.ms,
  };
}
