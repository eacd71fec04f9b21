/**
 * How every cloud activity runs one attempt, so that retries are safe:
 *
 * - Heartbeats report progress, not a clock: a beat is sent only when the work advanced (bytes
 *   sent, a child process used CPU or exited, a step finished). A dead worker stops beating and
 *   Temporal notices it within the heartbeat timeout.
 * - A stalled attempt gives itself up: no progress for STALL_MS (a hung CRIU or a transfer over a
 *   cut link) aborts it, kills its children and fails it as retryable, in seconds, not after the
 *   start-to-close timeout.
 * - A superseded attempt stops before its successor starts: activities on the same container of
 *   the same migration are serialized per worker, and a newer one aborts the older one and waits
 *   until it has finished (e.g. a restore whose heartbeat timed out, still running when the
 *   workflow's discard arrives).
 * - Cancellation (workflow cancel or abort, or the server dropping the attempt) aborts the work,
 *   except inside `uninterruptible` sections (a CRIU dump is not stopped half-way by a cancel).
 * - Fault points "<activity>:start" and "<activity>:end" (the work done, the result not yet
 *   reported) let tests kill or fail the worker at each boundary (lib/faults.ts).
 */
import { mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ApplicationFailure, Context } from '@temporalio/activity';
import { runInAttempt, type AttemptScope } from '../lib/attempt-scope';
import { faultPoint, InjectedFault } from '../lib/faults';
import { isAlive } from '../lib/processes';

/** No progress for this long and the attempt gives itself up (below the workflow's heartbeat timeout). */
export const STALL_MS = 5_000;
const TICK_MS = 500;

/** An attempt in progress on this worker, by step (migration + container). */
interface Running {
  abort(reason: Error): void;
  finished: Promise<void>;
}
const running = new Map<string, Running>();

/** The attempt as its activity sees it. */
export interface Attempt extends AttemptScope {
  /** Runs `fn` with cancellation deferred until it ends (stalls still abort it). */
  uninterruptible<T>(fn: () => Promise<T>): Promise<T>;
  /** A fault point inside the activity (see lib/faults.ts); returns "corrupt" for data faults. */
  fault(at: string): Promise<'corrupt' | undefined>;
  /** Resolves when the attempt starts its next child process. */
  nextChild(): Promise<void>;
  /** Heartbeat details of the previous attempt of this activity, if any (resume points). */
  readonly previousDetails: unknown;
  readonly attemptNumber: number;
}

export class StalledError extends Error {}

/** Sum of utime+stime (clock ticks) of a process and all its descendants; 0 when gone. */
function treeCpuTicks(pid: number): number {
  let total = 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    total += Number(fields[11]) + Number(fields[12]);
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      for (const child of readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').split(' ').filter(Boolean)) {
        total += treeCpuTicks(Number(child));
      }
    }
  } catch {
    /* exited meanwhile */
  }
  return total;
}

export interface AttemptOptions {
  cloud: string;
  activity: string;
  /** Serializes attempts on one container of one migration; undefined for cloud-wide steps. */
  step?: string;
  migration?: string;
  /** The container of the step, named in its heartbeats (the client's progress bars). */
  container?: string;
  /** Where the children of each step's attempt are recorded, so a restarted worker can stop a dead one's. */
  stateDir?: string;
}

interface ChildRecord {
  activity: string;
  children: Array<{ pid: number; started: string }>;
}

/** Start time of a process (field 22 of /proc/PID/stat): tells a PID from a reused one. */
function processStartTime(pid: number): string {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? '';
  } catch {
    return '';
  }
}

function writeChildRecord(file: string, record: ChildRecord): void {
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(`${file}.tmp`, JSON.stringify(record));
  renameSync(`${file}.tmp`, file);
}

/**
 * Children left by an attempt whose worker died (a SIGKILLed worker does not take its process
 * groups with it): a CRIU dump is let finish (killing it half-way would leave the container
 * frozen), anything else is killed. Returns once none is left.
 */
async function stopOrphans(file: string, orphans: Set<number>, signal: AbortSignal, log: (line: string) => void): Promise<void> {
  let record: ChildRecord;
  try {
    record = JSON.parse(readFileSync(file, 'utf8')) as ChildRecord;
  } catch {
    return;
  }
  const alive = record.children.filter((c) => c.started !== '' && processStartTime(c.pid) === c.started);
  for (const { pid } of alive) {
    orphans.add(pid); // their CPU time counts as this attempt's progress while we wait
    if (record.activity === 'checkpoint') {
      log(`waiting for the dump (pid ${pid}) left by an earlier attempt of checkpoint to finish`);
    } else {
      log(`killing pid ${pid}, left running by an earlier attempt of ${record.activity}`);
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
  while ([...orphans].some(isAlive)) {
    if (signal.aborted) {
      for (const pid of orphans) {
        try {
          process.kill(-pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      throw signal.reason as Error;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  orphans.clear();
  rmSync(file, { force: true });
}

/**
 * Beats while the attempt moves — its progress count, or the CPU time of the processes it
 * started (`mark` changes) — and aborts it as stalled after STALL_MS without.
 */
function startWatchdog(label: string, mark: () => string, beat: () => void, abort: (reason: Error) => void): NodeJS.Timeout {
  let lastMark = '';
  let lastProgressAt = Date.now();
  return setInterval(() => {
    const now = mark();
    if (now !== lastMark) {
      lastMark = now;
      lastProgressAt = Date.now();
      beat();
    } else if (Date.now() - lastProgressAt > STALL_MS) {
      abort(new StalledError(`${label} made no progress for ${STALL_MS / 1000} s`));
    }
  }, TICK_MS);
}

/**
 * What a heartbeat carries besides the work's own details: whose step it is and, for a transfer
 * (details with `wireBytes`), the rate since this attempt's first report — so one heartbeat read
 * by a client says how fast the copy goes, with no earlier sample of its own.
 */
class RateMeter {
  private first?: { at: number; wireBytes: number };

  decorate(details: unknown, container: string | undefined): unknown {
    if (!details || typeof details !== 'object') return details;
    const wireBytes = (details as { wireBytes?: unknown }).wireBytes;
    if (typeof wireBytes !== 'number') return container ? { ...details, container } : details;
    const now = Date.now();
    this.first ??= { at: now, wireBytes };
    const elapsedMs = now - this.first.at;
    const rateBytesPerSecond = elapsedMs >= 200 ? Math.round(((wireBytes - this.first.wireBytes) * 1000) / elapsedMs) : undefined;
    return { ...details, ...(container ? { container } : {}), ...(rateBytesPerSecond !== undefined ? { rateBytesPerSecond } : {}) };
  }
}

/** Stops the attempt running on the same step (in this worker) and waits until it has stopped; then this one is the step's. */
async function supersede(step: string, by: string, self: { abort(reason: Error): void; finished: Promise<void> }): Promise<void> {
  for (let older = running.get(step); older; older = running.get(step)) {
    older.abort(new Error(`superseded by ${by}`));
    await older.finished;
  }
  running.set(step, self);
}

/** A fault a test set at this point (lib/faults.ts): hang, delay, kill the worker, or tell the caller to corrupt. */
async function injectFault(opts: AttemptOptions, at: string, signal: AbortSignal, children: Set<number>): Promise<'corrupt' | undefined> {
  const action = checkFault(opts, at);
  if (action === 'hang') await hangUntilAborted(signal);
  if (typeof action === 'object') await new Promise((resolve) => setTimeout(resolve, action.delayMs));
  if (action === 'stop-children-and-kill') {
    for (const pid of children) process.kill(-pid, 'SIGSTOP');
    process.kill(process.pid, 'SIGKILL');
  }
  return action === 'corrupt' ? 'corrupt' : undefined;
}

/** What Temporal records of a failed attempt: a stall is retried, an injected fault says what it was; anything else as it came. */
function asFailure(reason: unknown, err: unknown): unknown {
  if (reason instanceof StalledError) return ApplicationFailure.retryable(reason.message, 'Stalled');
  if (reason instanceof InjectedFault) return ApplicationFailure.create({ message: reason.message, type: 'InjectedFault', nonRetryable: reason.fault.action === 'fail' });
  return err;
}

export async function runAttempt<R>(opts: AttemptOptions, work: (attempt: Attempt) => Promise<R>): Promise<R> {
  const ctx = Context.current();
  const label = `${opts.activity}${opts.step ? ` (${opts.step})` : ''} in ${opts.cloud}`;
  let markFinished = () => {};
  const finished = new Promise<void>((resolve) => (markFinished = resolve));
  const controller = new AbortController();
  const abort = (reason: Error) => {
    if (!controller.signal.aborted) controller.abort(reason);
  };

  let progressCount = 1;
  let details: unknown;
  const children = new Set<number>();
  const childRecord = opts.step && opts.stateDir ? path.join(opts.stateDir, 'attempts', `${opts.step.replace(/[^A-Za-z0-9._-]/g, '_')}.json`) : undefined;
  const saveChildren = () => {
    if (childRecord) writeChildRecord(childRecord, { activity: opts.activity, children: [...children].map((pid) => ({ pid, started: processStartTime(pid) })) });
  };
  let uninterruptibleDepth = 0;
  let cancelPending = false;
  const onCancel = () => {
    if (uninterruptibleDepth > 0) cancelPending = true;
    // The SDK's own CancelledFailure: thrown as is, Temporal records the attempt as cancelled.
    else abort(ctx.cancellationSignal.reason instanceof Error ? ctx.cancellationSignal.reason : new Error('cancelled by Temporal'));
  };
  ctx.cancellationSignal.addEventListener('abort', onCancel, { once: true });

  const orphans = new Set<number>();
  const childWaiters: Array<() => void> = [];
  const meter = new RateMeter();
  const beat = () => ctx.heartbeat(meter.decorate(details, opts.container));
  beat();
  const watchdog = startWatchdog(label, () => `${progressCount}/${[...children, ...orphans].map(treeCpuTicks).join(',')}`, beat, abort);

  const attempt: Attempt = {
    signal: controller.signal,
    previousDetails: ctx.info.heartbeatDetails,
    attemptNumber: ctx.info.attempt,
    progress(next?: unknown) {
      progressCount++;
      if (next !== undefined) details = next;
    },
    childStarted: (pid) => {
      children.add(pid);
      saveChildren();
      for (const resolve of childWaiters.splice(0)) resolve();
    },
    nextChild: () => new Promise<void>((resolve) => childWaiters.push(resolve)),
    childExited: (pid) => {
      children.delete(pid);
      saveChildren();
    },
    async uninterruptible(fn) {
      uninterruptibleDepth++;
      try {
        return await fn();
      } finally {
        if (--uninterruptibleDepth === 0 && cancelPending) onCancel();
      }
    },
    fault: (at) => injectFault(opts, at, controller.signal, children),
  };

  try {
    // A newer attempt on the same step stops the older one first, and waits until it has stopped:
    // one still running in this worker, or the children a dead worker's attempt left behind.
    if (opts.step) await supersede(opts.step, `${opts.activity} attempt ${ctx.info.attempt}`, { abort, finished });
    if (childRecord) await stopOrphans(childRecord, orphans, controller.signal, (line) => ctx.log.info(`[${opts.cloud}] ${label}: ${line}`));
    await injectFault(opts, `${opts.activity}:start`, controller.signal, new Set());
    // An abandoned attempt ends now, not when its work notices: its children are killed (exec.ts)
    // and its connections closed, but a stream on a dead connection may never settle.
    const result = await Promise.race([runInAttempt(attempt, () => work(attempt)), rejectWhenAborted(controller.signal, children)]);
    if (controller.signal.aborted) throw controller.signal.reason;
    checkFault(opts, `${opts.activity}:end`);
    return result;
  } catch (err) {
    throw asFailure(controller.signal.aborted ? controller.signal.reason : err, err);
  } finally {
    clearInterval(watchdog);
    ctx.cancellationSignal.removeEventListener('abort', onCancel);
    if (opts.step && running.get(opts.step)?.finished === finished) running.delete(opts.step);
    if (childRecord && children.size === 0) rmSync(childRecord, { force: true });
    markFinished();
  }
}

function checkFault(opts: AttemptOptions, at: string): ReturnType<typeof faultPoint> {
  return faultPoint(opts.cloud, at, opts.migration, opts.step?.slice(opts.step.lastIndexOf('/') + 1));
}

/** Rejects once the attempt is aborted and the children it started have exited (5 s at most: they were SIGKILLed). */
async function rejectWhenAborted(signal: AbortSignal, children: Set<number>): Promise<never> {
  await new Promise<void>((resolve) => {
    if (signal.aborted) resolve();
    signal.addEventListener('abort', () => resolve(), { once: true });
  });
  const deadline = Date.now() + 5_000;
  while (children.size > 0 && Date.now() < deadline) {
    for (const pid of children) if (!isAlive(pid)) children.delete(pid);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw signal.reason as Error;
}

/** An injected hang: no progress at all, until the attempt is given up. */
function hangUntilAborted(signal: AbortSignal): Promise<void> {
  return new Promise((_resolve, reject) => {
    if (signal.aborted) reject(signal.reason as Error);
    signal.addEventListener('abort', () => reject(signal.reason as Error), { once: true });
  });
}
