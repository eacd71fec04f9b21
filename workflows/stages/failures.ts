/** What a failed activity call says: a message for people, and the facts the stages decide on. */
import { ActivityFailure, ApplicationFailure, isCancellation, TimeoutFailure } from '@temporalio/workflow';
import type { DigestMismatchDetails } from '../../activities/cloud-activities';
import type { TransferHeartbeat } from '../../lib/types';

export function describe(err: unknown): string {
  if (err instanceof ActivityFailure) {
    if (err.cause instanceof TimeoutFailure) {
      // Out of time after failed attempts: the last one says why (e.g. the peer was unreachable).
      const last = err.cause.cause?.message;
      return `${err.activityType} timed out (${err.cause.timeoutType})${last ? `, last attempt: ${last}` : ': is the worker of that cloud running and reachable?'}`;
    }
    if (isCancellation(err)) return `${err.activityType} was cancelled`;
    return `${err.activityType} failed: ${err.cause?.message ?? err.message}`;
  }
  return err instanceof Error ? err.message : String(err);
}

/** True when Temporal recorded that this call's activity never started on any worker (none took it in time). */
export function neverStarted(err: unknown): boolean {
  return err instanceof ActivityFailure && err.cause instanceof TimeoutFailure && err.cause.timeoutType === 'SCHEDULE_TO_START';
}

export function failureType(err: unknown): string | undefined {
  return err instanceof ActivityFailure && err.cause instanceof ApplicationFailure ? err.cause.type ?? undefined : undefined;
}

/** An artifact that arrived corrupt: which files to send again. */
export function mismatch(err: unknown): DigestMismatchDetails | undefined {
  if (failureType(err) !== 'DigestMismatch') return undefined;
  return ((err as ActivityFailure).cause as ApplicationFailure).details?.[0] as DigestMismatchDetails | undefined;
}

/** Whether the activity said that trying again cannot help. */
export function nonRetryable(err: unknown): boolean {
  return err instanceof ActivityFailure && err.cause instanceof ApplicationFailure && err.cause.nonRetryable === true;
}

/** Bytes a transfer that failed for good had written to the link (its last heartbeat says). */
export function wireBytesOfFailure(err: unknown): number {
  if (err instanceof ActivityFailure && err.cause instanceof TimeoutFailure) {
    return (err.cause.lastHeartbeatDetails as TransferHeartbeat | undefined)?.wireBytes ?? 0;
  }
  return 0;
}
