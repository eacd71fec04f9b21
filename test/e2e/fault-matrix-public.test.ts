/**
 * The blackout budget's promise for a public VI, end to end on the real stack: the counter service
 * with a floating IP, a public DNS name (PowerDNS at cloud-a), a volume and a writable rootfs, its
 * one user outside (the testbed's Internet) connected through the name's address. Each case kills
 * a cloud's worker at one of its steps from the checkpoint on; the destination's stays down (a
 * dead cloud agent), the source's is restarted (without it nothing can resume the source). Each
 * case checks, from independent observers:
 *   - placement read from the runtimes: the service runs in exactly one cloud;
 *   - the outside user's longest gap between answers (its own clock) ≤ budget + 10 s, on its one
 *     connection, every reply the previous + 1;
 *   - the name as the outside world resolves it, the floating IPs each cloud's edge holds;
 *   - the service's own re-read of its memory, the volume's files re-hashed where it runs;
 *   - what the dead destination keeps is named in the failure and gone once its worker is back.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { WorkflowFailedError } from '@temporalio/client';
import { queryProgress, startMigration } from '../../client/migravi-client';
import type { ClientStatus } from '../../demo/client';
import { KV_PORT, loadDemoVi } from '../../demo/demo-vi';
import { resolveFromOutside, startDemoClient } from '../../demo/scenario';
import { run } from '../../lib/exec';
import type { Fault } from '../../lib/faults';
import { waitFor } from '../../lib/processes';
import type { MigrationReport } from '../../lib/types';
import type { CleanupProgress } from '../../workflows/clean-up-after-rollback';
import { CLOUDS, E2eStack, type Role } from './stack';

const NAME = 'kv.vi.example.';
const BUDGET_S = 10;
const BALLAST_MIB = 16;

interface Case {
  from: string;
  to: string;
  report?: MigrationReport;
  failure?: string;
  /** The outside user's status before the move (none once its connection ended with a drain). */
  before?: ClientStatus;
  startedAt: number;
  endedAt: number;
}

const summary: string[] = [];

describe('fault matrix, public VI: a dead cloud never leaves the service running nowhere beyond the budget (end to end)', function () {
  this.timeout(300_000);
  let stack: E2eStack;
  let n = 0;
  let volumeBefore: Record<string, string>;
  let nameBefore: string[];

  before(async () => {
    stack = await E2eStack.start({
      id: 'mvfpub',
      ballastMiB: BALLAST_MIB,
      vi: async (stateDir) => {
        const volume = path.join(stateDir, 'volumes', 'kv-data');
        await mkdir(volume, { recursive: true });
        for (let i = 0; i < 4; i++) await writeFile(path.join(volume, `part-${i}.bin`), randomBytes(256 << 10));
        const base = await loadDemoVi({ ballastMiB: BALLAST_MIB, only: ['kv'] });
        const kv = base.containers[0]!;
        return {
          ...base,
          name: 'pub',
          containers: [{ ...kv, readonlyRootfs: false, floatingIp: {}, volumes: [{ source: volume, target: '/data', readOnly: false }], ingress: [...(kv.ingress ?? []), { port: KV_PORT, protocol: 'tcp' as const, from: '203.0.113.0/24' }] }],
          dns: { zone: 'vi.example.', cloud: 'cloud-a', ttl: 5, records: [{ name: 'kv', container: 'kv' }] },
        };
      },
      // The service's one user is outside: it found the service by its public name.
      client: async (record) => {
        const [address] = await resolveFromOutside(record, NAME);
        assert.ok(address, `${NAME} does not resolve from the outside world`);
        return startDemoClient(record, 'outside', { name: 'outside-user', ip: address, port: KV_PORT, protocol: 'kv' });
      },
    });
    nameBefore = await resolveFromOutside(stack.record, NAME);
    volumeBefore = await volumeDigests('cloud-a');
  });

  after(async function () {
    console.log(`\n  public-VI fault matrix (placement read from the runtimes, outage = the outside user's longest gap, budget ${BUDGET_S} s):\n  ${summary.join('\n  ')}\n`);
    const unhappy = this.test?.parent?.tests.some((t) => t.state === 'failed') ?? true;
    await stack?.stop(unhappy);
  });

  afterEach(async () => {
    await stack.setFaults([]);
    for (const role of ['orchestrator', ...CLOUDS] as Role[]) stack.release(role);
    await stack.settle();
  });

  const other = (cloud: string) => CLOUDS.find((c) => c !== cloud)!;

  /** The volume's files re-hashed where the container runs (its registered volume directory there). */
  async function volumeDigests(cloud: string): Promise<Record<string, string>> {
    const spec = (await stack.cloud(cloud).controlPlane.listContainers()).kv;
    assert.ok(spec?.volumes?.[0], `kv is not registered with its volume in ${cloud}`);
    const dir = spec.volumes[0].source;
    const files = (await readdir(dir)).sort();
    return Object.fromEntries(await Promise.all(files.map(async (f) => [f, createHash('sha256').update(await readFile(path.join(dir, f))).digest('hex')] as const)));
  }

  /** One GET from the outside world to `address`: the counter's value, or '' when nothing answered. */
  async function getFromOutside(address: string): Promise<string> {
    const reply = await run('busybox', ['sh', '-c', `printf "GET\\n" | timeout 3 busybox nc -w 2 ${address} ${KV_PORT}`], { netns: stack.record.outside.netns, allowFailure: true });
    return reply.stdout.trim();
  }

  /** Moves kv to the other cloud with these faults; `during` acts while the migration runs. */
  async function move(title: string, opts: { faults?: (from: string, to: string) => Array<Omit<Fault, 'id'>>; hold?: 'destination'; budgetS?: number; withoutUser?: boolean; during?: (workflowId: string, from: string, to: string) => Promise<void> }): Promise<Case> {
    const from = await stack.whereKvRuns();
    const to = other(from);
    const before = opts.withoutUser ? undefined : await stack.client.waitForReplies(20);
    if (opts.hold) stack.hold(to as Role); // its worker stays down once killed
    await stack.setFaults(opts.faults?.(from, to) ?? []);
    const startedAt = Date.now();
    const handle = await startMigration(stack.temporal, { name: `pub-${++n}`, vi: 'pub', source: from, destination: to, options: { blackoutBudgetSeconds: opts.budgetS ?? BUDGET_S, drainTimeoutSeconds: 3 } });
    const outcome = handle.result().then(
      (report) => ({ report }),
      (err: unknown) => {
        if (err instanceof WorkflowFailedError) return { failure: String(err.cause?.message) };
        throw err;
      },
    );
    if (opts.during) await opts.during(handle.workflowId, from, to);
    const c: Case = { from, to, before, startedAt, ...(await outcome), endedAt: Date.now() };
    const status = await stack.client.status();
    const gaps = status.longGaps.filter((g) => g.endedAt >= c.startedAt);
    const outage = before ? `${gaps.length ? Math.max(...gaps.map((g) => g.ms)) : 0} ms` : '(no outside user)';
    const where = await stack.whereKvRuns().catch((err: Error) => `nowhere/both: ${err.message}`);
    summary.push(`${title.padEnd(46)} ${from}->${to}  ${(c.failure ? 'rolled back' : 'completed').padEnd(12)} kv in ${where}  outage ${outage} (budget ${opts.budgetS ?? BUDGET_S} s)  wall ${c.endedAt - c.startedAt} ms`);
    return c;
  }

  /** The outside user's longest gap since the case started, on its one connection, nothing lost. */
  async function assertOutage(c: Case, limitMs: number): Promise<void> {
    assert.ok(c.before, 'no outside user in this case');
    const after = await stack.assertConnectionKept(c.before, 30);
    const gaps = after.longGaps.filter((g) => g.endedAt >= c.startedAt);
    const outage = gaps.length ? Math.max(...gaps.map((g) => g.ms)) : 0;
    assert.ok(outage <= limitMs, `the outside user saw no answer for ${outage} ms (limit ${limitMs} ms)`);
  }

  /**
   * Rolled back to `c.from`: its name and floating IP as they were, memory and volume intact; the
   * dead destination's leftovers were named, and are gone once its worker is back.
   */
  async function assertRolledBackWithin(c: Case, limitMs: number): Promise<CleanupProgress> {
    assert.ok(c.failure, 'the migration succeeded');
    assert.match(c.failure, /rolled back: the VI runs at the source/);
    assert.deepEqual(await stack.placement(), { [c.from]: 'running', [c.to]: 'absent' });
    await assertOutage(c, limitMs);
    assert.deepEqual(await resolveFromOutside(stack.record, NAME), nameBefore, 'the name does not point where it did');
    assert.deepEqual((await stack.cloud(c.from).controlPlane.floatingIps()).map((f) => f.address), nameBefore, `${c.from}'s edge no longer holds the address the name points at`);
    assert.match(await getFromOutside(nameBefore[0]!), /^\d+$/, 'a new outside connection to the address is not served');
    assert.equal(await stack.kvSelfCheck(), `OK ${BALLAST_MIB}`);
    assert.deepEqual(await volumeDigests(c.from), volumeBefore, 'the volume changed');
    // What the dead destination keeps is reported, then cleaned by the follow-up once its worker is back.
    const handedOff = /clean-up left for when the worker of (\S+) is back \(workflow (\S+)\): (.*)/.exec(c.failure);
    assert.ok(handedOff, `the failure does not say what is left at ${c.to}:\n${c.failure}`);
    assert.equal(handedOff[1], c.to);
    assert.match(handedOff[3]!, new RegExp(`remove kv's port, bundle and files at ${c.to}`));
    stack.release(c.to as Role);
    const cleanup = (await stack.temporal.workflow.getHandle(handedOff[2]!).result()) as CleanupProgress;
    assert.deepEqual(cleanup.failed, []);
    await stack.assertOnlyAt(c.from);
    assert.deepEqual(await stack.cloud(c.to).controlPlane.floatingIps(), [], `${c.to} kept a floating IP`);
    return cleanup;
  }

  const killAt = (process: string, at: string): Omit<Fault, 'id'> => ({ process, at, action: 'kill' });

  for (const [title, at] of [
    ['destination dies in the drain set-up', 'routeReplies:start'],
    ['destination dies after the writable rootfs arrived', 'receiveRootfs:end'],
    ['destination dies in the final volume round', 'receiveVolumes:final'],
  ] as const) {
    it(`${title} (${at}), never restarted: the source resumes within the budget`, async () => {
      const c = await move(title, { hold: 'destination', faults: (_from, to) => [killAt(to, at)] });
      await assertRolledBackWithin(c, (BUDGET_S + 10) * 1000);
    });
  }

  // A restore may have started: the source waits for the copy's lease (15 s from the restore's
  // start, providers/runtime/fence-timer.ts) instead of a proof from the dead worker. The budget is
  // the lease's here, so that "budget + 10 s" bounds this case too.
  it('destination dies as its restore starts (restore:start), never restarted: the source resumes at the end of the copy\'s lease', async () => {
    const budgetS = 15;
    let frozenPlacement: Record<string, string> = {};
    const c = await move('destination dies as its restore starts', {
      hold: 'destination',
      budgetS,
      faults: (_from, to) => [killAt(to, 'restore:start')],
      during: async (workflowId) => {
        const handle = stack.temporal.workflow.getHandle(workflowId);
        await waitFor('the rollback', async () => (await queryProgress(handle)).state === 'compensating', 120_000, 100);
        frozenPlacement = await stack.placement(); // nothing of it runs anywhere while the lease lasts
      },
    });
    assert.deepEqual(frozenPlacement, { [c.from]: 'absent', [c.to]: 'absent' });
    assert.match(c.failure ?? '', /discard kv at cloud-[ab]: proven by the end of its lease/);
    await assertRolledBackWithin(c, (budgetS + 10) * 1000);
  });

  // Last: after a completed move the outside user's connection through the old address ends with the drain.
  it('the source worker dies after each of its steps from the checkpoint on (restarted): the move completes, the name follows', async () => {
    const steps = ['checkpoint:end', 'publicConnections:end', 'sendRootfs:end', 'volumes:final', 'setDnsRecords:end'];
    const restartsBefore = stack.restarts.length;
    const c = await move('source dies after each of its frozen steps', { budgetS: 90, faults: (from) => steps.map((s) => killAt(from, s)) });
    assert.equal(c.failure, undefined, `the migration failed: ${c.failure}`);
    assert.equal(stack.restarts.slice(restartsBefore).filter((r) => r === c.from).length, steps.length);
    await stack.assertOnlyAt(c.to);
    const kv = c.report!.containers[0]!;
    assert.ok(kv.floatingIp?.destination && kv.floatingIp.destination !== kv.floatingIp.source);
    assert.deepEqual(await resolveFromOutside(stack.record, NAME), [kv.floatingIp.destination], 'the name does not point at the new address');
    assert.match(await getFromOutside(kv.floatingIp.destination), /^\d+$/, 'the new address does not serve');
    assert.deepEqual(await stack.cloud(c.from).controlPlane.floatingIps(), [], 'the old address was not released after the drain');
    assert.equal(await stack.kvSelfCheck(), `OK ${BALLAST_MIB}`);
    assert.deepEqual(await volumeDigests(c.to), volumeBefore);
    // The outside user kept its one connection through the cut-over and the drain (it ends with the old address).
    const status = await stack.client.status();
    assert.equal(status.localPort, c.before?.localPort);
    assert.equal(status.discontinuities, 0);
    assert.ok(status.replies > c.before!.replies + 50, 'the outside user was not served after the move');
  });

  // After the move above the outside user's connection is gone with the old address: this case
  // reads the runtimes only. The copy ran at the destination when its worker died: its lease's
  // timer must kill it, or the source's resume makes two.
  it('destination dies after CRIU restored its copy (restore:after-criu), never restarted: the copy\'s lease kills it, then the source resumes', async () => {
    let bothRunning = false;
    let copyRanAtDestination = false;
    const c = await move('destination dies after CRIU restored the copy', {
      hold: 'destination',
      budgetS: 15,
      withoutUser: true,
      faults: (_from, to) => [killAt(to, 'restore:after-criu')],
      during: async (workflowId, from, to) => {
        const handle = stack.temporal.workflow.getHandle(workflowId);
        await waitFor('the copy to run at the destination', async () => (await stack.cloud(to).runtime.status('kv')) === 'running', 60_000, 50);
        copyRanAtDestination = true;
        // Until the rollback ends, never both; the timer ends the copy before the source resumes.
        await waitFor('the rollback to end', async () => {
          const placement = await stack.placement();
          if (placement[from] === 'running' && placement[to] === 'running') bothRunning = true;
          return (await queryProgress(handle)).state === 'failed';
        }, 120_000, 50);
      },
    });
    assert.ok(copyRanAtDestination, 'the copy never ran at the destination');
    assert.equal(bothRunning, false, 'the source resumed while the copy at the destination still ran');
    assert.ok(c.failure);
    assert.match(c.failure, /discard kv at cloud-[ab]: proven by the end of its lease/);
    assert.deepEqual(await stack.placement(), { [c.from]: 'running', [c.to]: 'absent' });
    assert.equal(await stack.kvSelfCheck(), `OK ${BALLAST_MIB}`);
    assert.deepEqual(await volumeDigests(c.from), volumeBefore);
    const handedOff = /clean-up left for when the worker of (\S+) is back \(workflow (\S+)\)/.exec(c.failure);
    assert.ok(handedOff);
    stack.release(c.to as Role);
    assert.deepEqual(((await stack.temporal.workflow.getHandle(handedOff[2]!).result()) as CleanupProgress).failed, []);
    await stack.assertOnlyAt(c.from);
  });
});
