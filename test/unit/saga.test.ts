/**
 * The saga's rollback order on its own (workflows/saga.ts), with a runner that records each undo
 * it is asked to run and can make a cloud's worker "down" (its undos never start) or an undo fail.
 */
import assert from 'node:assert/strict';
import { DEAD_WORKER_MS, MIN_BEFORE_RESUME_MS, Saga, type Compensation, type SagaRunner, type UndoBound, type UndoStep } from '../../workflows/saga';

class WorkerDown extends Error {}

interface Recorder {
  runner: SagaRunner;
  ran: Array<{ what: string; bound: UndoBound }>;
  handedOff: UndoStep[][];
  proofs: string[];
  notes: string[];
  /** The runner's clock (ms); sleepUntil moves it. */
  clock: number;
  slept: number[];
}

function recorder(opts: { down?: string[]; failing?: string[] } = {}): Recorder {
  const rec: Recorder = { ran: [], handedOff: [], proofs: [], notes: [], clock: 1_000_000, slept: [], runner: undefined as never };
  rec.runner = {
    run: async (step, bound) => {
      rec.ran.push({ what: step.what, bound });
      if (opts.down?.includes(step.cloud)) throw new WorkerDown(`no worker of ${step.cloud} took ${step.activity}`);
      if (opts.failing?.includes(step.what)) throw new Error(`${step.what} failed`);
      return step.activity === 'resumeAtSource' ? 'thawed' : undefined;
    },
    awaitFenceProof: async (fence, why) => {
      rec.proofs.push(`${fence.what}: ${why}`);
    },
    handOff: async (steps) => {
      rec.handedOff.push(steps);
      return 'm-cleanup';
    },
    workerDown: (err) => err instanceof WorkerDown,
    now: () => rec.clock,
    sleepUntil: async (at) => {
      rec.slept.push(at - rec.clock);
      rec.clock = Math.max(rec.clock, at);
    },
    describe: (err) => (err as Error).message,
    stage: () => undefined,
    note: (event) => rec.notes.push(event),
  };
  return rec;
}

/** The undos of one frozen container with a public name, recorded in the order the workflow records them. */
function publicMove(saga: Saga, flags: { restoreStarted: boolean; dnsSwitched: boolean; leaseEnds?: () => number }): void {
  const undo = (what: string, cloud: string, activity: Compensation['activity'], role: Compensation['role'], extra: Partial<Compensation> = {}) =>
    saga.record({ what, cloud, activity, role, input: {}, ...extra });
  undo('unstretch b', 'cloud-b', 'unstretchNetworks', 'cleanup');
  undo('unstretch a', 'cloud-a', 'unstretchNetworks', 'cleanup');
  undo('dns back', 'cloud-a', 'setDnsRecords', 'before-resume', { needed: () => flags.dnsSwitched });
  undo('discard prepared', 'cloud-b', 'discardPrepared', 'cleanup');
  undo('resume kv', 'cloud-a', 'resumeAtSource', 'resume', { container: 'kv' });
  undo('stop routing', 'cloud-b', 'routeReplies', 'cleanup');
  undo('discard kv', 'cloud-b', 'discardContainer', 'fence', { required: () => flags.restoreStarted, ...(flags.leaseEnds ? { leaseEnds: flags.leaseEnds } : {}) });
}

const limits = (budgetLeftMs?: number) => ({ rollbackMs: 600_000, budgetLeftMs: () => budgetLeftMs });

describe('saga: the rollback order', () => {
  it('fences, then what the source needs, then resumes, then cleans up in reverse', async () => {
    const saga = new Saga();
    publicMove(saga, { restoreStarted: true, dnsSwitched: true });
    const rec = recorder();
    const outcome = await saga.rollBack(rec.runner, limits(30_000));
    assert.deepEqual(rec.ran.map((r) => r.what), ['discard kv', 'dns back', 'resume kv', 'stop routing', 'discard prepared', 'unstretch a', 'unstretch b']);
    assert.deepEqual(outcome, { undoFailures: [] });
    assert.deepEqual(rec.notes, ['kv resumed at cloud-a (thawed)']);
  });

  it('bounds what comes before the resume by what is left of the budget, never below a floor', async () => {
    for (const [left, expected] of [[30_000, 30_000], [1_000, MIN_BEFORE_RESUME_MS], [-4_000, MIN_BEFORE_RESUME_MS], [undefined, 600_000]] as const) {
      const saga = new Saga();
      publicMove(saga, { restoreStarted: false, dnsSwitched: true });
      const rec = recorder();
      await saga.rollBack(rec.runner, limits(left));
      assert.equal(rec.ran.find((r) => r.what === 'dns back')!.bound.ms, expected, `budget left ${left}`);
    }
  });

  it('treats a fence whose restore never began as clean-up: nothing of the destination runs before the resume', async () => {
    const saga = new Saga();
    publicMove(saga, { restoreStarted: false, dnsSwitched: false });
    const rec = recorder();
    await saga.rollBack(rec.runner, limits(5_000));
    assert.deepEqual(rec.ran.map((r) => r.what), ['resume kv', 'discard kv', 'stop routing', 'discard prepared', 'unstretch a', 'unstretch b']);
  });

  it('hands a dead cloud\'s undos, in order, to the follow-up; the source side still runs now', async () => {
    const saga = new Saga();
    publicMove(saga, { restoreStarted: false, dnsSwitched: false });
    const rec = recorder({ down: ['cloud-b'] });
    const outcome = await saga.rollBack(rec.runner, limits(5_000));
    // The first undo at cloud-b finds no worker; the rest of cloud-b's are not even tried.
    assert.deepEqual(rec.ran.map((r) => r.what), ['resume kv', 'discard kv', 'unstretch a']);
    assert.equal(rec.ran.find((r) => r.what === 'discard kv')!.bound.deadWorkerMs, DEAD_WORKER_MS);
    assert.deepEqual(rec.handedOff.map((steps) => steps.map((s) => s.what)), [['discard kv', 'stop routing', 'discard prepared', 'unstretch b']]);
    assert.deepEqual(outcome.handedOff?.workflowId, 'm-cleanup');
    assert.deepEqual(outcome.undoFailures, []);
  });

  it('keeps the source frozen until a fence that failed is proven, then resumes it', async () => {
    const saga = new Saga();
    publicMove(saga, { restoreStarted: true, dnsSwitched: false });
    const rec = recorder({ down: ['cloud-b'] });
    const order: string[] = [];
    const run = rec.runner.run;
    rec.runner.run = async (step, bound) => {
      order.push(step.what);
      return run(step, bound);
    };
    const prove = rec.runner.awaitFenceProof;
    rec.runner.awaitFenceProof = async (fence, why) => {
      order.push(`proof of ${fence.what}`);
      return prove(fence, why);
    };
    await saga.rollBack(rec.runner, limits(5_000));
    assert.deepEqual(order.slice(0, 3), ['discard kv', 'proof of discard kv', 'resume kv']);
    assert.deepEqual(rec.proofs, ['discard kv: no worker of cloud-b took discardContainer']);
  });

  it('takes the end of the copy\'s lease for the fence when the destination is down, then cleans its remains', async () => {
    const saga = new Saga();
    const rec = recorder({ down: ['cloud-b'] });
    const leaseEnd = rec.clock + 7_000;
    publicMove(saga, { restoreStarted: true, dnsSwitched: false, leaseEnds: () => leaseEnd });
    const outcome = await saga.rollBack(rec.runner, limits(5_000));
    // The discard may prove it sooner, but is given no longer than the lease has left.
    assert.deepEqual(rec.ran[0], { what: 'discard kv', bound: { ms: 7_000, deadWorkerMs: Math.min(DEAD_WORKER_MS, 7_000) } });
    assert.deepEqual(rec.slept, [7_000]);
    assert.deepEqual(rec.proofs, [], 'waited for an operator although the lease proves the copy gone');
    assert.deepEqual(rec.ran.map((r) => r.what), ['discard kv', 'resume kv', 'discard kv', 'unstretch a']);
    assert.match(rec.notes[0]!, /discard kv: proven by the end of its lease/);
    assert.deepEqual(outcome.handedOff?.steps.map((s) => s.what), ['discard kv', 'stop routing', 'discard prepared', 'unstretch b']);
  });

  it('resumes at once when the copy\'s lease has already ended; a commit that may have disarmed it leaves the fence to proof', async () => {
    const ended = new Saga();
    const rec = recorder({ down: ['cloud-b'] });
    publicMove(ended, { restoreStarted: true, dnsSwitched: false, leaseEnds: () => rec.clock - 1 });
    await ended.rollBack(rec.runner, limits(5_000));
    assert.deepEqual(rec.ran.map((r) => r.what).slice(0, 2), ['resume kv', 'discard kv']);

    const uncertain = new Saga();
    const rec2 = recorder({ down: ['cloud-b'] });
    publicMove(uncertain, { restoreStarted: true, dnsSwitched: false, leaseEnds: undefined });
    await uncertain.rollBack(rec2.runner, limits(5_000));
    assert.equal(rec2.proofs.length, 1, 'no lease to rely on: the fence needs its proof');
  });

  it('tries an undo the resume needed again after the resume when it failed before', async () => {
    const saga = new Saga();
    publicMove(saga, { restoreStarted: false, dnsSwitched: true });
    const rec = recorder();
    // The DNS undo fails once (its service is slow), then succeeds.
    let dnsCalls = 0;
    const run = rec.runner.run;
    rec.runner.run = async (step, bound) => {
      if (step.what === 'dns back' && dnsCalls++ === 0) {
        rec.ran.push({ what: step.what, bound });
        throw new Error('DNS API timed out');
      }
      return run(step, bound);
    };
    const outcome = await saga.rollBack(rec.runner, limits(5_000));
    assert.deepEqual(rec.ran.map((r) => r.what), ['dns back', 'resume kv', 'dns back', 'discard kv', 'stop routing', 'discard prepared', 'unstretch a', 'unstretch b']);
    assert.match(rec.notes[0]!, /dns back: not done before the resume \(DNS API timed out\); tried again after it/);
    assert.deepEqual(outcome.undoFailures, []);
  });

  it('skips undos that are not needed and reports an undo that failed for good', async () => {
    const saga = new Saga();
    publicMove(saga, { restoreStarted: false, dnsSwitched: false });
    const rec = recorder({ failing: ['unstretch a'] });
    const outcome = await saga.rollBack(rec.runner, limits(5_000));
    assert.ok(!rec.ran.some((r) => r.what === 'dns back'));
    assert.deepEqual(outcome.undoFailures, ['unstretch a: unstretch a failed']);
  });

  it('refuses a fence without its condition, or a condition on something that is not a fence', () => {
    const saga = new Saga();
    assert.throws(() => saga.record({ what: 'discard', cloud: 'b', activity: 'discardContainer', role: 'fence', input: {} }), /a fence \(and only a fence\) says when it is required/);
    assert.throws(() => saga.record({ what: 'x', cloud: 'b', activity: 'discardPrepared', role: 'cleanup', input: {}, required: () => true }), /a fence \(and only a fence\)/);
  });

  it('forgets everything recorded once the group commits', async () => {
    const saga = new Saga();
    publicMove(saga, { restoreStarted: true, dnsSwitched: true });
    saga.commit();
    const rec = recorder();
    await saga.rollBack(rec.runner, limits(5_000));
    assert.deepEqual(rec.ran, []);
  });
});
