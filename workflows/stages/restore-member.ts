/**
 * Stage "restore", one member: restored at the destination one attempt per call, within the
 * blackout budget. A corrupt image is sent again (only its bad files), a failed attempt is tried
 * again, and the member records whether a restore may have started (its fence depends on it).
 */
import { isCancellation } from '@temporalio/workflow';
import type { ArtifactReceipt, PageSource, RestoreResult } from '../../lib/types';
import { on } from './activity-stubs';
import { note, type Member, type MigrationContext } from './context';
import { MAX_RESENDS, sendCheckpoint } from './copies';
import { describe, mismatch, neverStarted, nonRetryable } from './failures';
import { LEASE_MS } from './leases';

/** Restore calls (each one attempt) within the blackout budget. */
const MAX_RESTORE_CALLS = 5;

export interface RestoredMember {
  restored: RestoreResult;
  /** The image as restored (files sent again merged in). */
  image: ArtifactReceipt;
  restoredAt: number;
}

export async function restoreMember(ctx: MigrationContext, m: Member, imageDir: string, sent: ArtifactReceipt, remaining: () => number, concurrent: number, postCopy?: PageSource): Promise<RestoredMember> {
  const name = m.step.container.name;
  let image = sent;
  for (let call = 1; ; call++) {
    const restoreStub = on(ctx.plan.destination, {
      scheduleToStartTimeout: remaining(),
      startToCloseTimeout: '2 minutes',
      scheduleToCloseMs: remaining() + 120_000,
      retry: { maximumAttempts: 1 },
    });
    // The copy's lease: it dies then unless renewed or committed (a dead destination cannot keep the source frozen past it).
    const fenceUntil = Date.now() + LEASE_MS;
    const leaseBefore = m.leaseUntil;
    m.leaseUntil = Math.max(m.leaseUntil ?? 0, fenceUntil);
    try {
      const restored = await restoreStub.restore({ ...m.step, image, keepTcp: ctx.options.keepTcpConnections, concurrent, fenceUntil, ...(postCopy ? { postCopy } : {}) });
      m.restoreMayHaveStarted = true; // it runs there now: a group rollback must fence it too
      if (restored.completedEarlierAttempt) note(ctx, `${name}: an earlier restore attempt had restored it; the retry completed the step`);
      return { restored, image, restoredAt: Date.now() };
    } catch (err) {
      if (!neverStarted(err)) m.restoreMayHaveStarted = true;
      else m.leaseUntil = leaseBefore; // no worker took this call: its lease never reached the destination
      if (isCancellation(err)) throw err;
      const bad = mismatch(err);
      if (bad && m.resends < MAX_RESENDS) {
        m.resends++;
        note(ctx, `${name}: checkpoint arrived corrupt (${bad.problems.join('; ')}); sending ${bad.badFiles.join(', ')} again`);
        const again = await sendCheckpoint(ctx, m.step, m.endpoint, imageDir, remaining(), bad.badFiles);
        image = mergeResent(image, again, sent);
        continue;
      }
      if (nonRetryable(err) || call >= MAX_RESTORE_CALLS || neverStarted(err)) throw err;
      note(ctx, `${name}: restore attempt ${call} failed (${describe(err)}); trying again`);
    }
  }
}

/** The image with the files sent again in place of the corrupt ones (its digest and size: the original's). */
function mergeResent(image: ArtifactReceipt, again: ArtifactReceipt, original: ArtifactReceipt): ArtifactReceipt {
  const merged = new Map((image.files ?? []).map((f) => [f.name, f]));
  for (const f of again.files ?? []) merged.set(f.name, f);
  return { ...again, files: [...merged.values()].sort((a, b) => a.name.localeCompare(b.name)), bytes: image.bytes, sha256: original.sha256 };
}
