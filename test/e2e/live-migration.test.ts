/**
 * End to end, nothing mocked: two embedded clouds (network namespaces, sshd, runc + CRIU), the
 * real Temporal dev server, the orchestrator and one worker per cloud running inside its cloud.
 * The demo VI's counter service is migrated from cloud-a to cloud-b while a client keeps one TCP
 * connection open and exchanges messages with it; then a migration back fails for real at the
 * destination and must leave the service running where it was, connection included.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Client, Connection, WorkflowFailedError } from '@temporalio/client';
import { directoryBytes } from '../../activities/artifacts';
import { abortMigration, approveCutover, followMigration, queryProgress, runningTransfers, startMigration, waitForState } from '../../client/migravi-client';
import type { ClientStatus } from '../../demo/client';
import { deployDemoVi, startDemoClient, type DemoClient } from '../../demo/scenario';
import { startCloudWorkers, startOrchestratorWorker, startTemporalServer } from '../../lib/embedded-stack';
import { run } from '../../lib/exec';
import { criuPath, demoRootfs, testbedsDir } from '../../lib/paths';
import { isAlive, startService, stopPid, waitFor } from '../../lib/processes';
import type { MigrationProgress, MigrationReport } from '../../lib/types';
import { openLocalCloud } from '../../providers/local/local-cloud';
import { registerProcess, setWanRate, testbedDown, testbedUp, unregisterProcess, type TestbedRecord } from '../../providers/local/testbed';

const TESTBED_ID = 'mvtest';

async function printLogTails(dirs: string[]): Promise<void> {
  for (const dir of dirs) {
    const files = existsSync(dir) ? (await readdir(dir)).filter((f) => f.endsWith('.log')) : [];
    for (const file of files) {
      const { stdout } = await run('tail', ['-n', '30', path.join(dir, file)], { allowFailure: true });
      console.log(`\n----- ${path.join(dir, file)} (last 30 lines) -----\n${stdout}`);
    }
  }
}
const TEMPORAL_PORT = 7243;

describe('live migration between two embedded clouds (end to end)', function () {
  this.timeout(300_000);
  const stateDir = path.join(testbedsDir, TESTBED_ID);
  let record: TestbedRecord;
  let tmp: string;
  let temporalPid: number | undefined;
  let connection: Connection;
  let temporal: Client;
  let client: DemoClient;
  let workers: Record<string, number>;
  const cloud = (name: string) => openLocalCloud(stateDir, name);

  /** The client got `replies` more answers on the connection it had before, with a counter that never jumped. */
  async function assertSameConnectionAndCounter(statusBefore: ClientStatus, replies: number): Promise<void> {
    const after = await client.waitForReplies(replies);
    assert.equal(after.localPort, statusBefore.localPort, 'the client is on another connection');
    assert.equal(after.error, undefined);
    assert.equal(after.discontinuities, 0, 'a reply was not the previous value + 1');
    assert.equal(after.lastValue, after.replies, 'the counter does not match the number of INCRs the client sent');
  }

  before(async () => {
    await testbedDown(stateDir, TESTBED_ID); // leftovers of an interrupted run
    tmp = await mkdtemp(path.join(os.tmpdir(), 'migravi-e2e-'));
    record = await testbedUp({ id: TESTBED_ID, stateDir, clouds: ['cloud-a', 'cloud-b'], wanGateway: '203.0.113.129', wanPrefixLength: 25, wanRateMbit: 1000, criuPath });
    temporalPid = await startTemporalServer({ port: TEMPORAL_PORT, uiPort: TEMPORAL_PORT + 1000, dbFile: path.join(tmp, 'temporal.sqlite'), logFile: path.join(tmp, 'temporal.log'), headless: true });
    await startOrchestratorWorker(record, `127.0.0.1:${TEMPORAL_PORT}`, path.join(tmp, 'orchestrator.log'));
    const firstWorkers = await startCloudWorkers(record, TEMPORAL_PORT, tmp);
    connection = await Connection.connect({ address: `127.0.0.1:${TEMPORAL_PORT}` });
    temporal = new Client({ connection });

    await deployDemoVi(record, 'cloud-a', 32);
    // The cloud workers restart after the deployment: they must read their clouds back from disk.
    for (const pid of Object.values(firstWorkers)) {
      await stopPid(pid);
      await unregisterProcess(stateDir, pid);
    }
    workers = await startCloudWorkers(record, TEMPORAL_PORT, tmp);
    client = await startDemoClient(record, 'cloud-a');
  });

  after(async function () {
    // On a failure (or a test that never ran because a hook failed), show what the processes said
    // before the teardown deletes their logs.
    const unhappy = this.test?.parent?.suites.flatMap((suite) => suite.tests).some((t) => t.state !== 'passed');
    if (unhappy && tmp) await printLogTails([tmp, ...(record?.clouds.map((c) => c.dir) ?? [])]);
    await connection?.close();
    await testbedDown(stateDir, TESTBED_ID); // stops workers and client by their recorded PIDs
    if (temporalPid) await stopPid(temporalPid);
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  describe('cloud-a -> cloud-b, one container with an open TCP connection', () => {
    let report: MigrationReport;
    let wallMs: number;
    let finalProgress: MigrationProgress;
    let statusBefore: ClientStatus;
    const seenPhases: string[] = [];

    before(async () => {
      statusBefore = await client.waitForReplies(50);
      const started = Date.now();
      const handle = await startMigration(temporal, { name: 'e2e', source: 'cloud-a', destination: 'cloud-b', containers: ['kv'] });
      report = await followMigration(handle, (p) => seenPhases.push(p.phase), 100);
      wallMs = Date.now() - started;
      finalProgress = await queryProgress(handle);
    });

    it('keeps the same client connection open, exchanging data after the move', async () => {
      const after = await client.waitForReplies(100);
      assert.equal(after.error, undefined);
      assert.equal(after.closed, false);
      assert.equal(after.localPort, statusBefore.localPort, 'the client is on another connection');
      assert.ok(after.lastReplyAt! > statusBefore.lastReplyAt! && after.replies >= statusBefore.replies + 100);
    });

    it('carries the service memory over: the counter continues, never restarts', async () => {
      const after = await client.status();
      assert.equal(after.discontinuities, 0, 'a reply was not the previous value + 1');
      assert.equal(after.firstValue, 1);
      assert.equal(after.lastValue, after.replies, 'the counter does not match the number of INCRs the client sent');
    });

    it('runs the container in cloud-b and no longer in cloud-a', async () => {
      const a = cloud('cloud-a');
      const b = cloud('cloud-b');
      assert.equal(await b.runtime.status('kv'), 'running');
      assert.equal(await a.runtime.status('kv'), 'absent');
      assert.ok(!existsSync(`/run/netns/${a.controlPlane.portNetns('kv')}`), 'the source port still exists');
      assert.ok((await b.controlPlane.listContainers()).kv);
      assert.equal((await a.controlPlane.listContainers()).kv, undefined);
      // The service answers a new connection at its old address, now from cloud-b.
      const reply = await run('busybox', ['sh', '-c', 'printf "GET\\n" | timeout 5 nc 192.0.2.10 7000'], { netns: a.controlPlane.portNetns('client') });
      assert.match(reply.stdout.trim(), /^\d+$/);
      assert.ok(Number(reply.stdout) >= (await client.status()).lastValue! - 1);
    });

    it('moves exactly the bytes it wrote, digest-checked, with nothing left at either side', async () => {
      const [container] = report.containers;
      assert.ok(container);
      assert.deepEqual(container.artifacts.map((a) => a.kind), ['rootfs', 'checkpoint']);
      for (const artifact of container.artifacts) assert.match(artifact.sha256, /^[0-9a-f]{64}$/);
      const checkpoint = container.artifacts.find((a) => a.kind === 'checkpoint')!;
      // The image crossed as its own files: every byte CRIU wrote, each file digest-checked.
      assert.equal(checkpoint.bytes, container.imageBytes, `sent ${checkpoint.bytes} B of an image of ${container.imageBytes} B`);
      assert.equal(container.verifiedBytes, checkpoint.bytes, 'the destination did not read back every byte sent');
      assert.ok(checkpoint.files && checkpoint.files.length > 1);
      assert.equal(checkpoint.files.reduce((s, f) => s + f.bytes, 0), checkpoint.bytes);
      assert.ok(container.imageBytes > 32 * 1048576, 'the 32 MiB ballast is not in the image');
      const rootfs = container.artifacts.find((a) => a.kind === 'rootfs')!;
      assert.ok(rootfs.bytes > (await directoryBytes(demoRootfs)), 'the rootfs tar is smaller than the rootfs');
      assert.equal(report.bytesMoved, container.artifacts.reduce((s, a) => s + a.bytes, 0));
      for (const c of record.clouds) {
        const dir = path.join(c.dir, 'migrations');
        const leftovers = existsSync(dir) ? await readdir(dir, { recursive: true }) : [];
        assert.deepEqual(leftovers.filter((f) => f.endsWith('.tar') || f.includes('checkpoint')), [], `${c.name} kept artifacts`);
      }
    });

    it('reports phase timings that sum to no more than the wall time, and exposed progress while running', () => {
      assert.deepEqual(report.phases.map((p) => p.phase), ['inventory', 'preflight', 'network', 'prepare', 'pre-copy', 'checkpoint', 'transfer', 'restore', 'release']);
      const sum = report.phases.reduce((s, p) => s + p.durationMs, 0);
      assert.ok(sum > 0 && sum <= report.wallMs, `phases sum to ${sum} ms, workflow wall time ${report.wallMs} ms`);
      assert.ok(report.wallMs <= wallMs, `workflow wall ${report.wallMs} ms > client-measured ${wallMs} ms`);
      const c = report.containers[0]!;
      assert.ok(c.frozenMs >= c.checkpointMs + c.restoreMs + c.verifyMs);
      assert.ok(seenPhases.includes('transfer') || seenPhases.includes('checkpoint'), `progress seen: ${seenPhases.join(', ')}`);
      assert.equal(finalProgress.state, 'completed');
      assert.equal(finalProgress.bytesMoved, report.bytesMoved);
    });
  });

  describe('cloud-b -> cloud-a when the restore fails at the destination', () => {
    let failure: WorkflowFailedError | undefined;
    let statusBefore: ClientStatus;

    before(async () => {
      statusBefore = await client.waitForReplies(20);
      const handle = await startMigration(temporal, { name: 'e2e-back', source: 'cloud-b', destination: 'cloud-a', containers: ['kv'], options: { approveCutover: true } });
      await waitForState(handle, 'awaiting-approval');
      // A real fault: something else holds the service's port in the destination's namespace, so
      // CRIU cannot re-bind the listening socket there.
      const netns = cloud('cloud-a').controlPlane.portNetns('kv');
      const squatter = await startService({ name: 'port squatter', argv: ['nsenter', `--net=/run/netns/${netns}`, 'busybox', 'nc', '-l', '-p', '7000'], logFile: path.join(tmp, 'squatter.log') });
      await registerProcess(stateDir, 'port squatter', squatter);
      await waitFor('the squatter to listen on 7000', async () => (await run('ss', ['-Hltn', 'sport = :7000'], { netns })).stdout.trim() !== '');
      await approveCutover(handle);
      try {
        await handle.result();
      } catch (err) {
        if (err instanceof WorkflowFailedError) failure = err;
        else throw err;
      }
    });

    it('fails, says why, and says it rolled back', () => {
      assert.ok(failure, 'the migration succeeded despite the squatter');
      assert.match(String(failure.cause?.message), /restore failed[\s\S]*rolled back: the VI runs at the source/);
    });

    it('resumes the container at the source: exactly one copy, running in cloud-b', async () => {
      assert.equal(await cloud('cloud-b').runtime.status('kv'), 'running');
      assert.equal(await cloud('cloud-a').runtime.status('kv'), 'absent');
      assert.ok(!existsSync(`/run/netns/${cloud('cloud-a').controlPlane.portNetns('kv')}`), 'the destination port was not removed');
    });

    it('keeps the client connection and the counter through the failed attempt', async () => {
      await assertSameConnectionAndCounter(statusBefore, 100);
    });

    it('undoes only its own changes: the stretch of the first migration still carries the traffic', async () => {
      const a = await cloud('cloud-a').controlPlane.state.read();
      assert.deepEqual(a.stretches['vi-net'], [cloud('cloud-b').config.publicIp]);
      assert.ok(a.networks['vi-net'], 'the network that existed before was removed');
    });
  });

  describe('cloud-b -> cloud-a when the source worker is killed in the middle of the transfer', () => {
    let report: MigrationReport;
    let statusBefore: ClientStatus;
    let killedDuring: string | undefined;
    let transferSeen: Awaited<ReturnType<typeof runningTransfers>>[number] | undefined;
    let totalBytes: number | undefined;

    before(async () => {
      statusBefore = await client.waitForReplies(20);
      // A slow link keeps the transfer going long enough to kill the worker in the middle of it.
      await setWanRate(record, 'cloud-b', 40);
      const handle = await startMigration(temporal, { name: 'e2e-crash', source: 'cloud-b', destination: 'cloud-a', containers: ['kv'] });
      // Kill once the transfer's heartbeats show it well under way (and so visible to operators).
      await waitFor('1 MiB of the image sent', async () => {
        transferSeen = (await runningTransfers(handle)).find((t) => t.activity === 'sendCheckpoint');
        return (transferSeen?.bytes ?? 0) >= 1 << 20;
      }, 60_000, 50);
      totalBytes = (await queryProgress(handle)).transferTotalBytes;
      const victim = workers['cloud-b']!;
      process.kill(victim, 'SIGKILL');
      killedDuring = (await queryProgress(handle)).phase;
      await waitFor('the killed worker to be gone', () => !isAlive(victim));
      await unregisterProcess(stateDir, victim);
      await setWanRate(record, 'cloud-b', 1000);
      // The worker comes back; Temporal hands it the transfer again once the dead attempt's heartbeat times out.
      Object.assign(workers, await startCloudWorkers(record, TEMPORAL_PORT, tmp, ['cloud-b']));
      report = await handle.result();
    });

    it('finishes the migration with the restarted worker', async () => {
      assert.equal(killedDuring, 'transfer');
      assert.ok(transferSeen && totalBytes && transferSeen.bytes < totalBytes, `killed at ${transferSeen?.bytes} of ${totalBytes} bytes`);
      assert.equal(transferSeen.kind, 'checkpoint');
      assert.equal(await cloud('cloud-a').runtime.status('kv'), 'running');
      assert.equal(await cloud('cloud-b').runtime.status('kv'), 'absent');
      const transfer = report.phases.find((p) => p.phase === 'transfer')!;
      assert.ok(transfer.durationMs > 20_000, `transfer took ${transfer.durationMs} ms: the retry did not wait for the heartbeat timeout`);
    });

    it('keeps the client connection and the counter through the long freeze', async () => {
      await assertSameConnectionAndCounter(statusBefore, 100);
    });
  });

  describe('two migrations of the same container at once', () => {
    let first: Error | undefined;
    let second: Error | undefined;
    let statusBefore: ClientStatus;

    before(async () => {
      statusBefore = await client.waitForReplies(20);
      const one = await startMigration(temporal, { name: 'e2e-first', source: 'cloud-a', destination: 'cloud-b', containers: ['kv'], options: { approveCutover: true } });
      await waitForState(one, 'awaiting-approval'); // holds its claim on kv, everything prepared
      const two = await startMigration(temporal, { name: 'e2e-second', source: 'cloud-a', destination: 'cloud-b', containers: ['kv'] });
      second = await two.result().then(() => undefined, (err: Error) => err);
      await abortMigration(one, 'operator changed their mind');
      first = await one.result().then(() => undefined, (err: Error) => err);
    });

    it('refuses the second, naming the migration that holds the container', () => {
      assert.ok(second instanceof WorkflowFailedError, 'the second migration was not refused');
      assert.match(String(second.cause?.message), /container kv is already being migrated by migrate-e2e-first-/);
    });

    it('aborts the first on the operator\'s word and rolls it back: one copy, still in cloud-a', async () => {
      assert.ok(first instanceof WorkflowFailedError);
      assert.match(String(first.cause?.message), /operator changed their mind[\s\S]*rolled back: the VI runs at the source/);
      assert.equal(await cloud('cloud-a').runtime.status('kv'), 'running');
      assert.equal(await cloud('cloud-b').runtime.status('kv'), 'absent');
      assert.equal((await cloud('cloud-b').controlPlane.state.read()).ports.kv, undefined, 'the prepared port was left at the destination');
      await assertSameConnectionAndCounter(statusBefore, 50);
    });
  });

  describe('a request that cannot be served', () => {
    it('is refused at inventory, naming what is missing, and changes nothing in either cloud', async () => {
      const snapshot = async () => Promise.all(['cloud-a', 'cloud-b'].map((c) => cloud(c).controlPlane.state.read()));
      const before = await snapshot();
      const handle = await startMigration(temporal, { name: 'ghost', source: 'cloud-a', destination: 'cloud-b', containers: ['ghost'] });
      await assert.rejects(handle.result(), (err: unknown) => {
        assert.ok(err instanceof WorkflowFailedError);
        assert.match(String(err.cause?.message), /container\(s\) ghost not found in cloud-a/);
        return true;
      });
      assert.deepEqual(await snapshot(), before);
      assert.equal(await cloud('cloud-a').runtime.status('kv'), 'running');
    });
  });
});
