/**
 * The follow-up of a rollback: undos that could not run when the migration rolled back, because
 * the worker of their cloud was down (the source had already resumed: nothing waits on them).
 * Each runs in the order recorded, on its own cloud's task queue, and waits there until that
 * worker is back; the result lists what was done and what failed for good.
 */
import { ApplicationFailure, defineQuery, proxyActivities, setHandler } from '@temporalio/workflow';
import type { CloudActivities } from '../activities/cloud-activities';
import { cloudTaskQueue } from '../lib/plan';
import { UNDO_ACTIVITIES, type UndoStep } from './saga';

export interface CleanupInput {
  /** The workflow id of the migration that rolled back. */
  migration: string;
  steps: UndoStep[];
  /** How long each undo may wait for its cloud's worker (default 7 days). */
  waitHours?: number;
}

export interface CleanupProgress {
  migration: string;
  /** The undo waiting or running now. */
  current?: UndoStep;
  done: string[];
  failed: Array<{ what: string; error: string }>;
  pending: string[];
}

export const cleanupProgressQuery = defineQuery<CleanupProgress>('progress');

export async function cleanUpAfterRollback(input: CleanupInput): Promise<CleanupProgress> {
  for (const step of input.steps) {
    if (!(UNDO_ACTIVITIES as readonly string[]).includes(step.activity)) {
      throw ApplicationFailure.nonRetryable(`not an undo: ${step.activity} (${step.what})`, 'InvalidInput');
    }
  }
  const progress: CleanupProgress = { migration: input.migration, done: [], failed: [], pending: input.steps.map((s) => s.what) };
  setHandler(cleanupProgressQuery, () => progress);
  for (const step of input.steps) {
    progress.current = step;
    const stub = proxyActivities<CloudActivities>({
      taskQueue: cloudTaskQueue(step.cloud),
      scheduleToCloseTimeout: `${input.waitHours ?? 24 * 7} hours`,
      heartbeatTimeout: '8 seconds',
      retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '10s' },
    }) as unknown as Record<string, (arg: unknown) => Promise<unknown>>;
    try {
      await stub[step.activity]!(step.input);
      progress.done.push(step.what);
    } catch (err) {
      progress.failed.push({ what: step.what, error: err instanceof Error ? (err.cause instanceof Error ? err.cause.message : err.message) : String(err) });
    }
    progress.pending.shift();
  }
  progress.current = undefined;
  return progress;
}
