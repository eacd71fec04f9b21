/**
 * The fault matrix, end to end on the real stack (Temporal dev server, runc + CRIU, sshd, network
 * namespaces; nothing mocked). The demo counter service (16 MiB of memory ballast) is moved back
 * and forth between the clouds while its client keeps one TCP connection open; each case injects
 * faults (lib/faults.ts, or by the test: kills, link cuts, a server restart, cancel, abort) and
 * then checks, from independent observers:
 *   - placement read from the runtimes: kv runs in exactly one cloud, nothing of it in the other;
 *   - the client's one connection survived and the counter never jumped; the service's own
 *     re-read of its memory ballast is intact;
 *   - bytes counted by the kernel on the WAN interface agree with what the report claims;
 *   - the workflow's result names what happened.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { WorkflowFailedError } from '@temporalio/client';
import { abortMigration, queryProgress, runningTransfers, startMigration, waitForState, type MigrationHandle } from '../../client/migravi-client';
import type { ClientStatus } from '../../demo/client';
import { run } from '../../lib/exec';
import type { Fault } from '../../lib/faults';
import type { MigrationPlanInput } from '../../lib/plan';
import { waitFor } from '../../lib/processes';
import type { MigrationReport } from '../../lib/types';
import { setWanRate } from '../../providers/local/testbed';
import { CLOUDS, E2eStack, type Role } from './stack';

const BALLAST_MIB = 16;
const MiB = 1 << 20;

interface Move {
  from: string;
  to: string;
  handle: MigrationHandle;
  report?: MigrationReport;
  failure?: WorkflowFailedError;
  before: ClientStatus;
  /** Bytes the source's WAN interface sent during the migration (kernel counter). */
  wanTx: number;
  /** Ids of the injected faults that fired. */
  fired: string[];
  /** Window of the migration, to find the client's blackout in it. */
  startedAt: number;
  endedAt: number;
}

/** One line per case for the closing summary: where kv ended, connection, blackout the client saw. */
const summary: string[] = [];

describe('fault matrix: exactly once under every fault (end to end)', function () {
  this.timeout(240_000);
  let stack: E2eStack;
  let n = 0;

  before(async () => {
    stack = await E2eStack.start({ id: 'mvfault', ballastMiB: BALLAST_MIB });
  });

  after(async function () {
    console.log(`\n  fault matrix summary (placement read from the runtimes, blackout = the client's longest gap):\n  ${summary.join('\n  ')}\n`);
    const unhappy = this.test?.parent?.tests.some((t) => t.state === 'failed') ?? true;
    await stack?.stop(unhappy);
  });

  afterEach(async () => {
    // Whatever a case did, the next one starts with no fault, a healed full-speed link and every worker up.
    await stack.setFaults([]);
    for (const cloud of CLOUDS) {
      await stack.cutLink(cloud, false);
      await setWanRate(stack.record, cloud, 1000);
    }
    for (const role of ['orchestrator', ...CLOUDS] as Role[]) stack.release(role);
    await stack.settle();
  });

  const other = (cloud: string) => CLOUDS.find((c) => c !== cloud)!;
  const fault = (process: string, at: string, action: Fault['action']) => ({ process, at, action });

  /** Moves kv from where it runs to the other cloud with these faults; `during` acts while it runs. */
  async function move(opts: {
    faults?: (from: string, to: string) => Array<Omit<Fault, 'id'>>;
    options?: MigrationPlanInput['options'];
    slowLinkMbit?: number;
    during?: (handle: MigrationHandle, from: string, to: string) => Promise<void>;
  }): Promise<Move> {
    const from = await stack.whereKvRuns();
    const to = other(from);
    const before = await stack.client.waitForReplies(20);
    await stack.setFaults(opts.faults?.(from, to) ?? []);
    if (opts.slowLinkMbit) await setWanRate(stack.record, from, opts.slowLinkMbit);
    const tx0 = await stack.wanTxBytes(from);
    const startedAt = Date.now();
    const handle = await startMigration(stack.temporal, { name: `fault-${++n}`, source: from, destination: to, containers: ['kv'], ...(opts.options ? { options: opts.options } : {}) });
    const result = handle.result().then(
      (report) => ({ report }),
      (err: unknown) => {
        if (err instanceof WorkflowFailedError) return { failure: err };
        throw err;
      },
    );
    if (opts.during) await opts.during(handle, from, to);
    const outcome = await result;
    const endedAt = Date.now();
    const wanTx = (await stack.wanTxBytes(from)) - tx0;
    const fired = await stack.firedFaults();
    await stack.setFaults([]);
    await stack.settle();
    const m: Move = { from, to, handle, before, wanTx, fired, startedAt, endedAt, ...outcome };
    await record(m);
    return m;
  }

  /** Notes the case's outcome as independent observers saw it (runtime placement, the client). */
  async function record(m: Move): Promise<void> {
    const status = await stack.client.waitForReplies(5).catch(() => undefined);
    const gaps = (status?.longGaps ?? []).filter((g) => g.endedAt >= m.startedAt && g.endedAt <= m.endedAt + 60_000);
    const blackout = gaps.length ? Math.max(...gaps.map((g) => g.ms)) : 0;
    const where = await stack.whereKvRuns().catch((err: Error) => `nowhere/both: ${err.message}`);
    const connection = status && status.localPort === m.before.localPort && !status.error && status.discontinuities === 0 ? 'kept' : 'LOST';
    const outcome = m.failure ? `rolled back (${String(m.failure.cause?.message).split('\n')[0]!.slice(0, 90)})` : 'completed';
    summary.push(`${(summaryCase ?? '?').padEnd(44)} ${m.from}->${m.to}  ${outcome.padEnd(40)} kv in ${where}  connection ${connection}  blackout ${blackout} ms  frozen ${m.report?.containers[0]?.frozenMs ?? '-'} ms  wall ${m.endedAt - m.startedAt} ms`);
  }
  let summaryCase: string | undefined;
  beforeEach(function () {
    summaryCase = this.currentTest?.title.split(':')[0]!.slice(0, 44);
  });

  /** Waits until the running checkpoint transfer has sent `bytes`. */
  async function transferReached(handle: MigrationHandle, bytes: number): Promise<number> {
    let sent = 0;
    await waitFor(`${bytes} bytes of the image sent`, async () => {
      // The image streams from the checkpoint step (while CRIU writes it), or from a resend.
      const transfer = (await runningTransfers(handle).catch(() => [])).find((t) => t.kind === 'checkpoint' && ['checkpoint', 'sendCheckpoint'].includes(t.activity));
      sent = transfer?.bytes ?? 0;
      return sent >= bytes;
    }, 60_000, 50);
    return sent;
  }

  async function assertMoved(m: Move): Promise<MigrationReport> {
    assert.equal(m.failure, undefined, `the migration failed: ${m.failure?.cause?.message}`);
    await stack.assertOnlyAt(m.to);
    await stack.assertConnectionKept(m.before);
    assert.equal(await stack.kvSelfCheck(), `OK ${BALLAST_MIB}`);
    return m.report!;
  }

  async function assertRolledBack(m: Move, why: RegExp): Promise<string> {
    assert.ok(m.failure, 'the migration succeeded');
    const message = String(m.failure.cause?.message);
    assert.match(message, why);
    assert.match(message, /rolled back: the VI runs at the source/);
    await stack.assertOnlyAt(m.from);
    await stack.assertConnectionKept(m.before);
    assert.equal(await stack.kvSelfCheck(), `OK ${BALLAST_MIB}`);
    return message;
  }

  /** The kernel's byte count on the source's WAN link agrees with the report (headers and control traffic aside). */
  function assertBytesAgree(m: Move, report: { bytesMoved: number }): void {
    assert.ok(m.wanTx >= report.bytesMoved * 0.98, `the WAN interface sent ${m.wanTx} B, the report claims ${report.bytesMoved} B`);
    assert.ok(m.wanTx <= report.bytesMoved * 1.15 + 2 * MiB, `the WAN interface sent ${m.wanTx} B, far more than the ${report.bytesMoved} B reported`);
  }

  it('a plain move: bytes on the wire agree with the report, memory intact', async () => {
    const m = await move({});
    const report = await assertMoved(m);
    assertBytesAgree(m, report);
    const [c] = report.containers;
    assert.deepEqual(c?.checks.map((k) => k.kind), ['rootfs', 'checkpoint']);
    assert.ok(c!.checks[1]!.verifiedBytes > BALLAST_MIB * MiB, 'the destination re-hashed less than the ballast');
  });

  it('the orchestrator is SIGKILLed at every phase boundary, before and after the commit point', async () => {
    const phases = ['inventory', 'preflight', 'network', 'prepare', 'pre-copy', 'predict', 'checkpoint', 'transfer', 'restore', 'release', 'done'];
    const restartsBefore = stack.restarts.length;
    const m = await move({ faults: () => phases.map((p) => fault('orchestrator', `phase:${p}`, 'kill')) });
    await assertMoved(m);
    assert.equal(m.fired.length, phases.length, `fired: ${m.fired.join(', ')}`);
    assert.ok(stack.restarts.slice(restartsBefore).filter((r) => r === 'orchestrator').length >= phases.length, `only ${stack.restarts.length - restartsBefore} restarts`);
  });

  it('the source worker is SIGKILLed after each of its steps (work done, result lost) and after the dump', async () => {
    const steps = ['inventory', 'preflight', 'claimContainers', 'stretchNetworks', 'sendRootfs', 'measureForPrediction', 'checkpoint', 'releaseSource'];
    const restartsBefore = stack.restarts.length;
    const m = await move({ faults: (from) => [...steps.map((s) => fault(from, `${s}:end`, 'kill')), fault(from, 'checkpoint:after-dump', 'kill')] });
    await assertMoved(m);
    assert.equal(m.fired.length, steps.length + 1, `fired: ${m.fired.join(', ')}`);
    assert.equal(stack.restarts.slice(restartsBefore).filter((r) => r === m.from).length, steps.length + 1);
  });

  it('the source worker dies while CRIU dumps and the dump hangs: the retry gives the orphaned dump up, thaws and dumps again', async () => {
    const m = await move({ faults: (from) => [fault(from, 'checkpoint:during-dump', 'stop-children-and-kill')] });
    await assertMoved(m);
    assert.deepEqual(m.fired, ['f0']);
    // runc and CRIU outlive their SIGKILLed worker; the retry found them (stopped: no progress) and killed them before dumping.
    const log = await readFile(path.join(stack.tmp, `worker-${m.from}.log`), 'utf8');
    assert.match(log, /waiting for the dump \(pid \d+\) left by an earlier attempt of checkpoint to finish/);
    assert.match(log, /checkpoint \(.*\) in cloud-[ab] made no progress for 5 s/);
  });

  it('the destination worker is SIGKILLed after each of its steps and inside the restore (before CRIU, after CRIU)', async () => {
    const steps = ['preflight', 'replicateNetworks', 'stretchNetworks', 'prepareDestination', 'receiveRootfs', 'restore', 'cleanupReceived'];
    const restartsBefore = stack.restarts.length;
    const m = await move({ faults: (_from, to) => [...steps.map((s) => fault(to, `${s}:end`, 'kill')), fault(to, 'restore:before-criu', 'kill'), fault(to, 'restore:after-criu', 'kill')] });
    const report = await assertMoved(m);
    assert.equal(m.fired.length, steps.length + 2, `fired: ${m.fired.join(', ')}`);
    assert.equal(stack.restarts.slice(restartsBefore).filter((r) => r === m.to).length, steps.length + 2);
    // The retries after the restore completed it (guard off and registry: assertMoved), and said so.
    assert.match(report.events.join('\n'), /an earlier restore attempt had restored it; the retry completed the step/);
  });

  it('the source worker is SIGKILLed mid-transfer: the retry resumes where the destination copy ends', async () => {
    let sentAtKill = 0;
    const m = await move({
      slowLinkMbit: 40,
      during: async (handle, from) => {
        sentAtKill = await transferReached(handle, 6 * MiB);
        stack.kill(from as Role);
      },
    });
    const report = await assertMoved(m);
    const image = report.containers[0]!.artifacts.find((a) => a.kind === 'checkpoint')!;
    assert.ok(image.resumedBytes > 0, 'the retry sent the image from zero');
    // Kernel counters: the link carried about one image, not one image plus what was sent before the kill.
    // (and the link probe sent before the freeze).
    const artifacts = report.containers[0]!.artifacts.reduce((s, a) => s + a.bytes, 0) + (report.groups[0]!.linkProbeBytes ?? 0);
    assert.ok(m.wanTx < artifacts * 1.1 + 1 * MiB, `${m.wanTx} B on the WAN for ${artifacts} B of artifacts and probe (killed after ${sentAtKill} B)`);
    assertBytesAgree(m, report);
  });

  it('the Temporal server restarts mid-migration and its SQLite state carries the migration on', async () => {
    const m = await move({
      slowLinkMbit: 40,
      during: async (handle) => {
        await transferReached(handle, 2 * MiB);
        await stack.restartTemporal();
      },
    });
    await assertMoved(m);
  });

  it('a cancel inside the freeze is a clean rollback: the source resumes from its image', async () => {
    const m = await move({
      slowLinkMbit: 40,
      during: async (handle) => {
        await transferReached(handle, 2 * MiB);
        await handle.cancel();
      },
    });
    const message = await assertRolledBack(m, /the migration was cancelled/);
    assert.match(message, /kv resumed at cloud-[ab] \(restored-from-image\)/);
  });

  it('an abort at the approval gate rolls back without freezing, and leaves no bundle or port at the destination', async () => {
    const m = await move({
      options: { approveCutover: true },
      during: async (handle) => {
        await waitForState(handle, 'awaiting-approval');
        await abortMigration(handle, 'operator changed their mind');
      },
    });
    await assertRolledBack(m, /operator changed their mind/);
  });

  it('an abort inside the freeze interrupts the transfer and rolls back', async () => {
    const m = await move({
      slowLinkMbit: 40,
      during: async (handle) => {
        await transferReached(handle, 2 * MiB);
        await abortMigration(handle, 'maintenance window closed');
      },
    });
    await assertRolledBack(m, /maintenance window closed/);
  });

  it('a destination that dies inside the freeze: the source resumes after the blackout budget, at once', async () => {
    let frozenFor = 0;
    const m = await move({
      options: { blackoutBudgetSeconds: 10 },
      slowLinkMbit: 40, // the freeze lasts long enough to kill the destination inside it, before its restore
      during: async (handle, from, to) => {
        stack.hold(to as Role);
        await transferReached(handle, 1 * MiB);
        stack.kill(to as Role);
        const frozenAt = Date.now();
        await waitFor('kv to run again at the source', async () => (await stack.cloud(from).runtime.status('kv')) === 'running', 60_000, 100);
        frozenFor = Date.now() - frozenAt;
        stack.release(to as Role); // it comes back: the cleanup there can finish
      },
    });
    // Its worker received the image stream: the stream (in the checkpoint step) or the restore runs out of time.
    await assertRolledBack(m, /checkpoint (timed out|failed: .*Connection refused)|restore timed out \(SCHEDULE_TO_START\)/);
    assert.ok(frozenFor < 20_000, `the source stayed frozen ${frozenFor} ms with a 10 s budget`);
  });

  it('a destination that cannot discard its copy: the source stays frozen with its image until the copy\'s lease has ended', async () => {
    let duringFreeze: Record<string, string> = {};
    let imageComplete = false;
    let waitedMs = 0;
    const m = await move({
      faults: (_from, to) => [fault(to, 'restore:before-criu', 'fail'), fault(to, 'discardContainer:start', 'fail')],
      during: async (handle, from) => {
        // Refused as Temporal recorded it (a failed discardContainer task), not merely begun: the
        // faults are cleared below, and a discard that had not yet reached its fault point would go through.
        const discardRefused = async () => {
          const events = (await handle.fetchHistory()).events ?? [];
          const discards = new Set(events.filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'discardContainer').map((e) => String(e.eventId)));
          return events.some((e) => e.activityTaskFailedEventAttributes && discards.has(String(e.activityTaskFailedEventAttributes.scheduledEventId)));
        };
        await waitFor('the fence to be refused', discardRefused, 60_000, 50);
        const refusedAt = Date.now();
        duringFreeze = await stack.placement();
        const imageDir = path.join(stack.cloud(from).workDir, handle.workflowId, 'kv', 'checkpoint');
        imageComplete = await stack.cloud(from).runtime.checkpointComplete(imageDir);
        await stack.setFaults([]); // the destination recovers: the discard tried again after the resume goes through
        await waitFor('kv to run again at the source', async () => (await stack.cloud(from).runtime.status('kv')) === 'running', 60_000, 100);
        waitedMs = Date.now() - refusedAt;
      },
    });
    assert.deepEqual(duringFreeze, { 'cloud-a': 'absent', 'cloud-b': 'absent' }, 'a copy ran while the fence was broken');
    assert.ok(imageComplete, 'the frozen source did not hold a complete image');
    assert.ok(waitedMs >= 5_000, `the source resumed ${waitedMs} ms after the refused discard: before the copy's lease (15 s from its restore) could have ended`);
    const message = await assertRolledBack(m, /injected fault/);
    assert.match(message, /discard kv at cloud-[ab]: proven by the end of its lease/);
  });

  it('an image file corrupted in transit is caught by its digest, sent again, and never restored from', async () => {
    const m = await move({ faults: (from) => [fault(from, 'transfer:mid', 'corrupt')] });
    const report = await assertMoved(m);
    const c = report.containers[0]!;
    assert.equal(c.resends, 1);
    assert.match(report.events.join('\n'), /checkpoint arrived corrupt[\s\S]*sending .*pages.*again/);
    const artifacts = c.artifacts[0]!.bytes + c.imageBytes;
    assert.ok(report.bytesMoved > artifacts, 'the resend is not counted');
    assertBytesAgree(m, report);
  });

  it('the inter-cloud link is cut for a few seconds mid-transfer: the transfer resumes, not from zero', async () => {
    const m = await move({
      slowLinkMbit: 40,
      during: async (handle, from) => {
        await transferReached(handle, 3 * MiB);
        await stack.cutLink(from, true);
        // The outage itself: 8 s, longer than a stalled attempt is kept (5 s), shorter than the budget.
        await new Promise((resolve) => setTimeout(resolve, 8000));
        await stack.cutLink(from, false);
      },
    });
    const report = await assertMoved(m);
    const image = report.containers[0]!.artifacts.find((a) => a.kind === 'checkpoint')!;
    assert.ok(image.resumedBytes >= 1 * MiB, `only ${image.resumedBytes} B were kept from before the cut`);
  });

  it('the inter-cloud link is cut for longer than the blackout budget: clean rollback', async () => {
    let cutAt = 0;
    const m = await move({
      slowLinkMbit: 40,
      options: { blackoutBudgetSeconds: 8 },
      during: async (handle, from) => {
        await transferReached(handle, 1 * MiB);
        await stack.cutLink(from, true);
        cutAt = Date.now();
        await waitFor('the rollback', async () => ['failed', 'compensating'].includes((await queryProgress(handle)).state), 60_000, 100);
        await waitFor('kv to run again at the source', async () => (await stack.cloud(from).runtime.status('kv')) === 'running', 60_000, 100);
        await stack.cutLink(from, false);
      },
    });
    // The image streams from the checkpoint step: it is the one that runs out of time.
    await assertRolledBack(m, /checkpoint timed out|blackout budget/);
    assert.ok(cutAt > 0);
  });

  it('hung steps (checkpoint, transfer, restore) are given up and retried', async () => {
    // Without stall detection each hang would last until the blackout budget and roll the move back.
    const m = await move({
      // The second hang is in the image stream (after a MiB), inside the retried checkpoint step.
      faults: (from, to) => [fault(from, 'checkpoint:start', 'hang'), fault(from, 'transfer:mid', 'hang'), fault(to, 'restore:before-criu', 'hang')],
    });
    const report = await assertMoved(m);
    assert.deepEqual(m.fired, ['f0', 'f1', 'f2']);
    assert.match(report.events.join('\n'), /restore attempt 1 failed \(restore failed: restore \(.*\) in cloud-[ab] made no progress for 5 s\)/);
  });

  it('a step that fails once is retried; one that fails for good before the commit rolls back', async () => {
    const once = await move({ faults: (_from, to) => [fault(to, 'prepareDestination:start', 'fail-once')] });
    await assertMoved(once);
    const forGood = await move({ faults: (_from, to) => [fault(to, 'receiveRootfs:start', 'fail')] });
    await assertRolledBack(forGood, /receiveRootfs failed: injected fault/);
  });

  it('a source container left frozen by a dump that died is thawed in the rollback, not restored over', async () => {
    let pidBefore = 0;
    const m = await move({
      faults: (from) => [fault(from, 'checkpoint:start', 'hang')],
      during: async (handle, from) => {
        await waitFor('the checkpoint', async () => (await queryProgress(handle)).phase === 'checkpoint', 60_000, 20);
        const runtime = stack.cloud(from).runtime;
        const runcRoot = path.join(stack.cloud(from).config.dir, 'runc');
        pidBefore = JSON.parse((await run('runc', ['--root', runcRoot, 'state', 'kv'])).stdout).pid as number;
        await run('runc', ['--root', runcRoot, 'pause', 'kv']); // frozen, as a dump that died leaves it
        assert.equal(await runtime.status('kv'), 'paused');
        await abortMigration(handle, 'stop here');
      },
    });
    const message = await assertRolledBack(m, /stop here/);
    assert.match(message, /kv resumed at cloud-[ab] \(thawed\)/);
    const runcRoot = path.join(stack.cloud(m.from).config.dir, 'runc');
    const pidAfter = JSON.parse((await run('runc', ['--root', runcRoot, 'state', 'kv'])).stdout).pid as number;
    assert.equal(pidAfter, pidBefore, 'the container was restored, not thawed');
  });

  it('a terminated migration does not lock its container forever: the next one takes the stale claim over', async () => {
    const from = await stack.whereKvRuns();
    const stuck = await startMigration(stack.temporal, { name: `fault-${++n}`, source: from, destination: other(from), containers: ['kv'], options: { approveCutover: true } });
    await waitForState(stuck, 'awaiting-approval');
    await stuck.terminate('an operator terminated it instead of cancelling');
    // Terminate skips compensation by design: its prepared files at the destination stay (docs/failure-model.md).
    const stuckFiles = path.join(stack.cloud(other(from)).workDir, stuck.workflowId);
    assert.ok(existsSync(stuckFiles));
    const m = await move({});
    assert.equal(m.failure, undefined, `the migration failed: ${m.failure?.cause?.message}`);
    assert.match(m.report!.events.join('\n'), new RegExp(`took over the stale claim on kv \\(from ${stuck.workflowId}, which is no longer running\\)`));
    await rm(stuckFiles, { recursive: true });
    await stack.assertOnlyAt(m.to);
    await stack.assertConnectionKept(m.before);
  });
});
