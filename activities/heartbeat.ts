/**
 * Every activity heartbeats while it runs, so that Temporal notices a dead worker within the
 * heartbeat timeout (seconds) instead of the start-to-close timeout (minutes), and retries the
 * activity elsewhere or once the worker is back. Progress details, when an activity has some,
 * ride on the same heartbeats.
 */
import { Context } from '@temporalio/activity';

const KEEPALIVE_MS = 2_000;
const latestDetails = new WeakMap<Context, unknown>();

/**
 * Records progress details for an activity and sends them now. Take `ctx` with Context.current()
 * at the start of the activity: stream callbacks may run in another async context (e.g. that of a
 * reused sftp session's socket, opened by an earlier activity), where Context.current() is wrong.
 */
export function reportProgress(ctx: Context, details: unknown): void {
  latestDetails.set(ctx, details);
  ctx.heartbeat(details);
}

/** Wraps an activity so it heartbeats (with its latest progress) every few seconds while it runs. */
export function withHeartbeat<A extends unknown[], R>(activity: (...args: A) => Promise<R>): (...args: A) => Promise<R> {
  return async (...args: A) => {
    const ctx = Context.current();
    const timer = setInterval(() => ctx.heartbeat(latestDetails.get(ctx)), KEEPALIVE_MS);
    try {
      return await activity(...args);
    } finally {
      clearInterval(timer);
    }
  };
}

/** Applies withHeartbeat to every activity of an object, keeping their names and types. */
export function heartbeatingActivities<T extends Record<string, (...args: never[]) => Promise<unknown>>>(activities: T): T {
  return Object.fromEntries(
    Object.entries(activities).map(([name, fn]) => [name, withHeartbeat(fn as (...args: unknown[]) => Promise<unknown>)]),
  ) as unknown as T;
}
