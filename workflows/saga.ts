/**
 * The saga of one migration: every step that changes something records its undo first, and a
 * rollback runs the undos in an order that keeps the blackout budget's promise — clean-up at the
 * other side never stands between a frozen source and its resume (docs/failure-model.md):
 *
 *   1. fences: each destination copy that may have started is proven gone — a discard that
 *      succeeds, the end of the copy's lease (its timer kills it then, whatever its worker does),
 *      or an operator's word; nothing else runs before them;
 *   2. undos at the source's side that the resume needs (the public names pointed back),
 *      bounded by what is left of the blackout budget; one that fails is tried again after;
 *   3. the resumes at the source;
 *   4. everything else, in reverse order. A cloud whose worker does not take its undo within
 *      seconds is given up for now: its undos (in order) are handed to a follow-up workflow that
 *      retries them until that worker is back, and the result says so.
 *
 * Pure workflow code: the runner does the Temporal calls, so the order is testable on its own.
 */

/** What an undo is to the resume of the source. */
export type UndoRole =
  /** The destination copy proven gone: gates the resume (when a restore may have started). */
  | 'fence'
  /** At the source's side, needed before the source serves again (e.g. DNS back): bounded by the budget. */
  | 'before-resume'
  /** The container runs at the source again. */
  | 'resume'
  /** Anything else: after the resumes, and handed off when its cloud's worker is down. */
  | 'cleanup';

/** The cloud activities an undo may call (the follow-up workflow refuses any other). */
export const UNDO_ACTIVITIES = ['discardContainer', 'discardPrepared', 'resumeAtSource', 'routeReplies', 'setDnsRecords', 'removeNetworks', 'unstretchNetworks'] as const;
export type UndoActivity = (typeof UNDO_ACTIVITIES)[number];

/** One undo as data: which cloud's worker runs which activity with which input (serialisable). */
export interface UndoStep {
  what: string;
  cloud: string;
  activity: UndoActivity;
  input: unknown;
}

export interface Compensation extends UndoStep {
  role: UndoRole;
  /** Skipped when false at rollback time (e.g. a DNS switch never attempted). */
  needed?: () => boolean;
  /** Fences only: false when Temporal proved no restore began (the discard is then mere clean-up). */
  required?: () => boolean;
  /**
   * Fences only: when the copy's lease ends for sure (ms, the workflow's clock, margin included),
   * or undefined when no lease can be relied on (none was armed, or a commit may have disarmed it).
   */
  leaseEnds?: () => number | undefined;
  /** Resumes only: the container resumed (for the events). */
  container?: string;
}

/** How a rollback bounds one undo. */
export interface UndoBound {
  /** Overall time for the undo, retries included. */
  ms: number;
  /** A worker that does not take the undo within this long is taken for down. */
  deadWorkerMs?: number;
}

export interface SagaRunner {
  run(step: UndoStep, bound: UndoBound): Promise<unknown>;
  /** The fence could not be proven: waits (the source frozen) until it is. */
  awaitFenceProof(fence: Compensation, why: string): Promise<void>;
  now(): number;
  /** Waits (a durable timer) until `at`. */
  sleepUntil(at: number): Promise<void>;
  /** Starts the follow-up workflow that retries `steps` in order until their workers answer; returns its id. */
  handOff(steps: UndoStep[]): Promise<string>;
  /** True when the failure says no worker of that cloud took the undo. */
  workerDown(err: unknown): boolean;
  describe(err: unknown): string;
  stage(what: string): void;
  note(event: string): void;
}

export interface SagaLimits {
  /** Bound of each undo (the plan's rollbackTimeoutSeconds). */
  rollbackMs: number;
  /** Milliseconds left of the current freeze's blackout budget; undefined when nothing is frozen. */
  budgetLeftMs: () => number | undefined;
}

export interface RollbackOutcome {
  /** Undos that failed for good (reported). */
  undoFailures: string[];
  /** Undos left to the follow-up workflow, and its id. */
  handedOff?: { workflowId: string; steps: UndoStep[] };
}

/** A worker that does not pick an undo up within this long is taken for down (a live one takes it in milliseconds). */
export const DEAD_WORKER_MS = 5_000;
/** The least time an undo before the resume gets, even when the budget is spent. */
export const MIN_BEFORE_RESUME_MS = 5_000;

/** Which stage of the rollback an undo runs in (fences whose restore never began are clean-up). */
export function stageOf(c: Compensation): UndoRole {
  if (c.role === 'fence' && !(c.required?.() ?? true)) return 'cleanup';
  return c.role;
}

export class Saga {
  private readonly compensations: Compensation[] = [];

  record(c: Compensation): void {
    if ((c.role === 'fence') !== (c.required !== undefined)) throw new Error(`saga: ${c.what}: a fence (and only a fence) says when it is required`);
    if (c.leaseEnds && c.role !== 'fence') throw new Error(`saga: ${c.what}: only a fence has a lease`);
    this.compensations.push(c);
  }

  /** The group committed: nothing recorded so far is to be undone any more. */
  commit(): void {
    this.compensations.length = 0;
  }

  get size(): number {
    return this.compensations.length;
  }

  /** The undos a rollback would run now, with their stage, in the order recorded. */
  recorded(): Array<{ what: string; cloud: string; activity: string; stage: UndoRole }> {
    return this.compensations.map((c) => ({ what: c.what, cloud: c.cloud, activity: c.activity, stage: stageOf(c) }));
  }

  async rollBack(runner: SagaRunner, limits: SagaLimits): Promise<RollbackOutcome> {
    const due = [...this.compensations].reverse().filter((c) => c.needed?.() ?? true);
    const inStage = (role: UndoRole) => due.filter((c) => stageOf(c) === role);
    const undoFailures: string[] = [];

    // 1. Never resume a source while a destination copy may be alive.
    const again: Compensation[] = [];
    await Promise.all(
      inStage('fence').map(async (fence) => {
        runner.stage(`rollback: ${fence.what}`);
        const leaseEnd = fence.leaseEnds?.();
        if (leaseEnd === undefined) {
          try {
            await runner.run(fence, { ms: limits.rollbackMs, deadWorkerMs: DEAD_WORKER_MS });
          } catch (err) {
            await runner.awaitFenceProof(fence, runner.describe(err));
          }
          return;
        }
        // A lease holds: the copy is gone at its end whatever happens there; a discard may prove it sooner.
        const left = leaseEnd - runner.now();
        try {
          if (left < 1000) throw new Error('its lease has ended');
          await runner.run(fence, { ms: left, deadWorkerMs: Math.min(DEAD_WORKER_MS, left) });
        } catch (err) {
          await runner.sleepUntil(leaseEnd);
          runner.note(`${fence.what}: proven by the end of its lease (${runner.describe(err)}); what is left of it there is cleaned up after the resume`);
          again.push(fence);
        }
      }),
    );

    // 2. What the resume needs at the source's side, within what is left of the budget.
    for (const c of inStage('before-resume')) {
      runner.stage(`rollback: ${c.what}`);
      const left = limits.budgetLeftMs();
      const ms = left === undefined ? limits.rollbackMs : Math.min(limits.rollbackMs, Math.max(MIN_BEFORE_RESUME_MS, left));
      try {
        await runner.run(c, { ms, deadWorkerMs: Math.min(ms, DEAD_WORKER_MS) });
      } catch (err) {
        runner.note(`${c.what}: not done before the resume (${runner.describe(err)}); tried again after it`);
        again.push(c);
      }
    }

    // 3. The source serves again.
    await Promise.all(
      inStage('resume').map(async (c) => {
        runner.stage(`rollback: ${c.what}`);
        try {
          const how = await runner.run(c, { ms: limits.rollbackMs });
          runner.note(`${c.container ?? c.what} resumed at ${c.cloud} (${String(how)})`);
        } catch (err) {
          undoFailures.push(`${c.what}: ${runner.describe(err)}`);
        }
      }),
    );

    // 4. Clean-up, in reverse order; a cloud whose worker is down keeps its undos for later.
    const down = new Set<string>();
    const later: UndoStep[] = [];
    for (const c of [...again, ...inStage('cleanup')]) {
      if (down.has(c.cloud)) {
        later.push(asStep(c));
        continue;
      }
      runner.stage(`rollback: ${c.what}`);
      try {
        await runner.run(c, { ms: limits.rollbackMs, deadWorkerMs: DEAD_WORKER_MS });
      } catch (err) {
        if (runner.workerDown(err)) {
          down.add(c.cloud);
          later.push(asStep(c));
        } else {
          undoFailures.push(`${c.what}: ${runner.describe(err)}`);
        }
      }
    }
    if (!later.length) return { undoFailures };
    const workflowId = await runner.handOff(later);
    return { undoFailures, handedOff: { workflowId, steps: later } };
  }
}

function asStep(c: Compensation): UndoStep {
  return { what: c.what, cloud: c.cloud, activity: c.activity, input: c.input };
}
