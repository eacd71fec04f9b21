/**
 * Waiting on an OpenStack resource's status: the API is asked until the status is reached, the
 * resource fails, or the deadline passes. Each outcome is said with what was last seen.
 */
import { OpenStackWaitError } from './errors';

export interface WaitOptions {
  /** Absolute deadline (ms since the epoch), e.g. an activity's own. */
  deadline?: number;
  /** From now; the earlier of this and deadline applies. */
  timeoutMs?: number;
  /** Between two looks. */
  intervalMs?: number;
}

/** done: reached; failed: will not be reached (with why); pending: not yet (with what was seen). */
export type Verdict = { state: 'done' } | { state: 'failed'; reason: string } | { state: 'pending'; seen: string };

export async function pollUntil<T>(
  what: string,
  probe: () => Promise<T>,
  judge: (value: T) => Verdict,
  wait: WaitOptions,
  defaults: { timeoutMs: number; intervalMs: number },
): Promise<T> {
  const start = Date.now();
  const deadline = Math.min(wait.deadline ?? Infinity, start + (wait.timeoutMs ?? (wait.deadline === undefined ? defaults.timeoutMs : Infinity)));
  const interval = wait.intervalMs ?? defaults.intervalMs;
  for (;;) {
    const value = await probe();
    const verdict = judge(value);
    if (verdict.state === 'done') return value;
    if (verdict.state === 'failed') throw new OpenStackWaitError('failed', `${what}: ${verdict.reason}`);
    const left = deadline - Date.now();
    if (left <= 0) throw new OpenStackWaitError('timeout', `timed out after ${Date.now() - start} ms waiting for ${what}; last seen: ${verdict.seen}`);
    // The last look falls on the deadline rather than after it.
    await new Promise((resolve) => setTimeout(resolve, Math.min(interval, left)));
  }
}
