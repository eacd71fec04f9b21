/**
 * The attempt an activity is running, visible to the code it calls (lib/exec.ts) without being
 * passed down: child processes report themselves to it, so a stalled or abandoned attempt can be
 * told apart from a slow one (their CPU time grows) and its children killed when it is given up.
 */
import { AsyncLocalStorage } from 'node:async_hooks';

export interface AttemptScope {
  /** Aborted when the attempt is given up: stalled, superseded by a newer attempt, or cancelled. */
  readonly signal: AbortSignal;
  /** The work advanced (optionally with details for the heartbeat). */
  progress(details?: unknown): void;
  childStarted(pid: number): void;
  childExited(pid: number): void;
}

const storage = new AsyncLocalStorage<AttemptScope>();

export function currentAttempt(): AttemptScope | undefined {
  return storage.getStore();
}

export function runInAttempt<T>(scope: AttemptScope, fn: () => Promise<T>): Promise<T> {
  return storage.run(scope, fn);
}
