/**
 * End to end, nothing mocked: two embedded clouds (network namespaces, sshd, runc + CRIU), the
 * real Temporal dev server, the orchestrator and one worker per cloud running inside its cloud.
 * The demo VI's counter service is migrated from cloud-a to cloud-b while a client keeps one TCP
 * connection open and exchanges messages with it; then a migration back fails for real at the
 * destination and must leave the service running where it was, connection included. The fault
 * matrix (fault-matrix.test.ts) covers crashes, cuts, hangs, cancel and abort.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { lstat, readFile, readdir, readlink, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { WorkflowFailedError } from '@temporalio/client';
import { abortMigration, approveCutover, followMigration, startMigration, waitForState } from '../../client/migravi-client';
import type { ClientStatus } from '../../demo/client';
import { run } from '../../lib/exec';
import { demoRootfs } from '../../lib/paths';
import { startService, waitFor } from '../../lib/processes';
import type { MigrationReport, TransferEndpoint } from '../../lib/types';
import { E2eStack, TEMPORAL_PORT } from './stack';
import { KV_IP, KV_PORT } from '../../demo/demo-vi';
import { wanNamespace } from '../../providers/local/testbed';
import { capture } from './capture';
import { anotherAuthority, assertStrangersRefused, migraviTls, temporalAnswers } from './temporal-door';
import { AesGcmPayloadCodec } from '../../lib/payload-codec';
import { loadKeyRing } from '../../lib/payload-keys';

const BALLAST_MIB = 32;

/** sha256 of every file (and the target of every symlink) under `dir`, by relative path: recomputed at rest. */
async function treeDigests(dir: string, prefix = ''): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const name of (await readdir(path.join(dir, prefix))).sort()) {
    const rel = path.join(prefix, name);
    const full = path.join(dir, rel);
    const info = await lstat(full);
    if (info.isSymbolicLink()) out[rel] = `-> ${await readlink(full)}`;
    else if (info.isDirectory()) Object.assign(out, await treeDigests(dir, rel));
    else if (info.isFile()) out[rel] = createHash('sha256').update(await readFile(full)).digest('hex');
  }
  return out;
}

/** None of `plaintexts` occurs in `raw` (a history as Temporal stores it). */
function assertNoPlaintext(raw: Buffer, plaintexts: string[]): void {
  assert.ok(raw.length > 1000, `a history of ${raw.length} bytes`);
  for (const plain of plaintexts) assert.equal(raw.indexOf(plain), -1, `the raw history holds ${JSON.stringify(plain)} in plaintext`);
}

/** Every payload of the workflow's start and end, decoded through the data converter the stack's client uses. */
async function decodedPayloads(stack: E2eStack, workflowId: string): Promise<string> {
  const history = await stack.temporal.workflow.getHandle(workflowId).fetchHistory();
  const payloads = (history.events ?? []).flatMap((e) => [...(e.workflowExecutionStartedEventAttributes?.input?.payloads ?? []), ...(e.workflowExecutionCompletedEventAttributes?.result?.payloads ?? []), ...(e.activityTaskCompletedEventAttributes?.result?.payloads ?? [])]);
  const codec = new AesGcmPayloadCodec(await loadKeyRing());
  return (await codec.decode(payloads)).map((p) => Buffer.from(p.data ?? []).toString('utf8')).join('\n');
}

describe('live migration between two embedded clouds (end to end)', function () {
  this.timeout(300_000);
  let stack: E2eStack;

  before(async () => {
    stack = await E2eStack.start({ id: 'mvtest', ballastMiB: BALLAST_MIB });
  });

  after(async function () {
    // On a failure (or a test that never ran because a hook failed), show what the processes said.
    const unhappy = this.test?.parent?.suites.flatMap((suite) => suite.tests).some((t) => t.state !== 'passed') ?? true;
    await stack?.stop(unhappy);
  });

  describe('cloud-a -> cloud-b, one container with an open TCP connection', () => {
    let report: MigrationReport;
    let wallMs: number;
    let statusBefore: ClientStatus;
    let wanTx: number;
    let icmp0: number;
    let icmpReceived: number;
    let workflowId: string;
    const seenPhases: string[] = [];
    // A line the client sends the service once it runs in cloud-b: across the stretch, hence the WAN.
    const marker = `MIGRAVI-MARKER-${randomBytes(8).toString('hex')}`;
    let markerReply: string;
    let wanCapture: Buffer;
    let stretchCapture: Buffer;

    before(async () => {
      statusBefore = await stack.client.waitForReplies(50);
      // cloud-a's link on the WAN, read as an eavesdropper would, for the whole migration.
      const wan = await capture(wanNamespace(stack.record.options.id), 'w0', path.join(stack.tmp, 'wan.pcap'));
      try {
        const tx0 = await stack.wanTxBytes('cloud-a');
        icmp0 = await stack.clientIcmpUnreachables();
        const started = Date.now();
        const handle = await startMigration(stack.temporal, { name: 'e2e', source: 'cloud-a', destination: 'cloud-b', containers: ['kv'] });
        workflowId = handle.workflowId;
        report = await followMigration(handle, (p) => seenPhases.push(p.phase), 100);
        wallMs = Date.now() - started;
        wanTx = (await stack.wanTxBytes('cloud-a')) - tx0;
        icmpReceived = (await stack.clientIcmpUnreachables()) - icmp0;
        // cloud-b's side of the stretch (its VXLAN device exists once the network is replicated).
        const inner = await capture(stack.cloud('cloud-b').config.netns, 'vx-vi-net', path.join(stack.tmp, 'stretch.pcap'));
        try {
          const clientNetns = stack.cloud('cloud-a').controlPlane.portNetns('client');
          markerReply = (await run('busybox', ['sh', '-c', `printf '%s\\n' "$0" | timeout 5 busybox nc ${KV_IP} ${KV_PORT}`, marker], { netns: clientNetns })).stdout.trim();
        } finally {
          stretchCapture = await inner.stop();
        }
      } finally {
        wanCapture = await wan.stop();
      }
      await rm(path.join(stack.tmp, 'wan.pcap'), { force: true });
    });

    it('keeps the same client connection open, exchanging data after the move', async () => {
      const after = await stack.assertConnectionKept(statusBefore, 100);
      assert.equal(after.closed, false);
      assert.ok(after.lastReplyAt! > statusBefore.lastReplyAt!);
    });

    it("ends the client's retransmission back-off at the restore: its kernel got the nudge, and the connection is unharmed", async () => {
      // ICMP host-unreachable quoting its connection (scripts/tcp-nudge.c): 15 sent; a soft error only.
      assert.ok(icmpReceived >= 1, `the client's kernel counted ${icmpReceived} ICMP unreachable messages`);
      const after = await stack.client.status();
      assert.equal(after.error, undefined);
      assert.equal(after.closed, false);
    });

    it('carries the service memory over: the counter continues and the ballast re-reads intact', async () => {
      const after = await stack.client.status();
      assert.equal(after.firstValue, 1);
      assert.equal(after.discontinuities, 0, 'a reply was not the previous value + 1');
      assert.equal(await stack.kvSelfCheck(), `OK ${BALLAST_MIB}`);
    });

    it('runs the container in cloud-b only, and leaves nothing of it in cloud-a', async () => {
      await stack.assertOnlyAt('cloud-b');
      // The service answers a new connection at its old address, now from cloud-b.
      const reply = await run('busybox', ['sh', '-c', 'printf "GET\\n" | timeout 5 busybox nc 192.0.2.10 7000'], { netns: stack.cloud('cloud-a').controlPlane.portNetns('client') });
      assert.match(reply.stdout.trim(), /^\d+$/);
      assert.ok(Number(reply.stdout) >= (await stack.client.status()).lastValue! - 1);
    });

    it('delivers the rootfs intact: every file re-hashed at rest in cloud-b equals the original', async () => {
      const destination = path.join(stack.cloud('cloud-b').runtime.bundleDir('kv'), 'rootfs');
      assert.deepEqual(await treeDigests(destination), await treeDigests(demoRootfs));
    });

    it('reports the bytes the WAN interface actually carried, and what the destination re-hashed', () => {
      // Kernel counters on cloud-a's WAN link: the artifacts plus TCP/SSH framing and a little control traffic.
      assert.ok(wanTx >= report.bytesMoved * 0.98, `the WAN interface sent ${wanTx} B, the report claims ${report.bytesMoved} B`);
      assert.ok(wanTx <= report.bytesMoved * 1.15 + 2 * 1048576, `the WAN interface sent ${wanTx} B for ${report.bytesMoved} B reported`);
      const [c] = report.containers;
      assert.deepEqual(c?.checks.map((k) => k.kind), ['rootfs', 'checkpoint']);
      assert.ok(c!.checks[1]!.verifiedBytes > BALLAST_MIB * 1048576, 'the destination re-hashed less than the memory ballast');
      assert.ok(c!.checks[1]!.files > 1, 'the image was not checked file by file');
    });

    it('sends the containers\' traffic across the WAN encrypted: a capture of the whole migration holds no plaintext of it', () => {
      assert.equal(markerReply, 'ERR', 'the service did not answer the marker line');
      assert.notEqual(stretchCapture.indexOf(marker), -1, "the marker did not cross the stretch to cloud-b");
      assert.ok(wanCapture.length > wanTx / 2, `a capture of ${wanCapture.length} bytes for ${wanTx} bytes sent on the WAN`);
      assert.equal(wanCapture.indexOf(marker), -1, 'the marker crossed the WAN in plaintext');
    });

    it("keeps the plan, the inventory and the report encrypted in Temporal: its raw history shows none of them", async () => {
      const raw = await stack.rawHistory(workflowId);
      assertNoPlaintext(raw, ['"containers"', '"destination"', '"bytesMoved"', '"frozenMs"', KV_IP]);
      // The same history through the workers' codec: the plan and the report are there (the check above can fail).
      const decoded = await decodedPayloads(stack, workflowId);
      for (const field of ['"containers"', '"bytesMoved"', KV_IP]) assert.ok(decoded.includes(field), `the decoded history has no ${field}`);
    });

    it('leaves no checkpoint image, copy or directory of the migration in either cloud once it has settled', async () => {
      for (const cloud of ['cloud-a', 'cloud-b']) assert.deepEqual(await stack.migrationLeftovers(cloud, workflowId), [], `${cloud} keeps files of the migration`);
    });

    it('reports phase timings that fit in the wall time, and exposed progress while running', () => {
      assert.deepEqual(report.phases.map((p) => p.phase), ['inventory', 'preflight', 'network', 'prepare', 'pre-copy', 'predict', 'checkpoint', 'transfer', 'restore', 'release', 'release-networks']);
      const sum = report.phases.reduce((s, p) => s + p.durationMs, 0);
      assert.ok(sum > 0 && sum <= report.wallMs, `phases sum to ${sum} ms, workflow wall time ${report.wallMs} ms`);
      assert.ok(report.wallMs <= wallMs, `workflow wall ${report.wallMs} ms > client-measured ${wallMs} ms`);
      const c = report.containers[0]!;
      assert.ok(c.frozenMs >= c.checkpointMs + c.restoreMs);
      assert.ok(seenPhases.includes('transfer') || seenPhases.includes('checkpoint'), `progress seen: ${seenPhases.join(', ')}`);
    });
  });

  describe('cloud-b -> cloud-a when the restore fails at the destination', () => {
    let failure: WorkflowFailedError | undefined;
    let statusBefore: ClientStatus;
    let workflowId: string;
    /** Files of the migration at the destination while it waited for approval, and whether a non-root user could read them. */
    const whileWaiting = { files: [] as string[], readableByNobody: [] as string[], readableByRoot: 0 };

    before(async () => {
      statusBefore = await stack.client.waitForReplies(20);
      const handle = await startMigration(stack.temporal, { name: 'e2e-back', source: 'cloud-b', destination: 'cloud-a', containers: ['kv'], options: { approveCutover: true } });
      workflowId = handle.workflowId;
      await waitForState(handle, 'awaiting-approval');
      // The pre-copied root filesystem waits at the destination: only root may read it.
      whileWaiting.files = await stack.migrationFiles('cloud-a', workflowId);
      for (const file of whileWaiting.files) {
        const asNobody = await run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'head', '-c', '1', file], { allowFailure: true });
        if (asNobody.exitCode === 0) whileWaiting.readableByNobody.push(file);
        if ((await run('head', ['-c', '1', file], { allowFailure: true })).exitCode === 0) whileWaiting.readableByRoot++;
      }
      // A real fault: something else holds the service's port in the destination's namespace, so
      // CRIU cannot re-bind the listening socket there.
      const netns = stack.cloud('cloud-a').controlPlane.portNetns('kv');
      const squatter = await startService({ name: 'port squatter', argv: ['nsenter', `--net=/run/netns/${netns}`, 'busybox', 'nc', '-l', '-p', '7000'], logFile: path.join(stack.tmp, 'squatter.log') });
      await stack.adopt('port squatter', squatter);
      await waitFor('the squatter to listen on 7000', async () => (await run('ss', ['-Hltn', 'sport = :7000'], { netns })).stdout.trim() !== '');
      await approveCutover(handle);
      failure = await handle.result().then(() => undefined, (err: unknown) => (err instanceof WorkflowFailedError ? err : Promise.reject(err)));
    });

    it('fails, says why, and says it rolled back', () => {
      assert.ok(failure, 'the migration succeeded despite the squatter');
      assert.match(String(failure.cause?.message), /restore failed[\s\S]*rolled back: the VI runs at the source[\s\S]*kv resumed at cloud-b \(restored-from-image\)/);
    });

    it('kept what it had sent readable by root only while the migration waited, and removed it from both clouds once rolled back', async () => {
      assert.ok(whileWaiting.files.length > 0, 'the destination held no file of the migration while it waited for approval');
      assert.equal(whileWaiting.readableByRoot, whileWaiting.files.length);
      assert.deepEqual(whileWaiting.readableByNobody, [], 'a non-root user could read them');
      for (const cloud of ['cloud-a', 'cloud-b']) assert.deepEqual(await stack.migrationLeftovers(cloud, workflowId), [], `${cloud} keeps files of the rolled-back migration`);
    });

    it("keeps the failure's message encrypted too: the raw history does not say what failed or where", async () => {
      assert.match(String(failure?.cause?.message), /restore failed/); // decoded by the client's codec
      assertNoPlaintext(await stack.rawHistory(workflowId), ['restore failed', 'rolled back', 'squatter', 'Address already in use', '"containers"']);
    });

    it('resumes the container at the source: exactly one copy, running in cloud-b, nothing left in cloud-a', async () => {
      await stack.assertOnlyAt('cloud-b');
    });

    it('keeps the client connection and the counter through the failed attempt', async () => {
      await stack.assertConnectionKept(statusBefore, 100);
    });

    it('undoes only its own changes: the stretch of the first migration still carries the traffic', async () => {
      const a = await stack.cloud('cloud-a').controlPlane.state.read();
      assert.deepEqual(a.stretches['vi-net'], [stack.cloud('cloud-b').config.publicIp]);
      assert.ok(a.networks['vi-net'], 'the network that existed before was removed');
    });
  });

  describe('two migrations of the same container at once', () => {
    let first: Error | undefined;
    let second: Error | undefined;
    let statusBefore: ClientStatus;

    before(async () => {
      statusBefore = await stack.client.waitForReplies(20);
      const one = await startMigration(stack.temporal, { name: 'e2e-first', source: 'cloud-b', destination: 'cloud-a', containers: ['kv'], options: { approveCutover: true } });
      await waitForState(one, 'awaiting-approval'); // holds its claim on kv, everything prepared
      const two = await startMigration(stack.temporal, { name: 'e2e-second', source: 'cloud-b', destination: 'cloud-a', containers: ['kv'] });
      second = await two.result().then(() => undefined, (err: Error) => err);
      await abortMigration(one, 'operator changed their mind');
      first = await one.result().then(() => undefined, (err: Error) => err);
    });

    it('refuses the second, naming the migration that holds the container', () => {
      assert.ok(second instanceof WorkflowFailedError, 'the second migration was not refused');
      assert.match(String(second.cause?.message), /container kv is already being migrated by migrate-e2e-first-/);
    });

    it('aborts the first on the operator\'s word and rolls it back: one copy, still in cloud-b', async () => {
      assert.ok(first instanceof WorkflowFailedError);
      assert.match(String(first.cause?.message), /operator changed their mind[\s\S]*rolled back: the VI runs at the source/);
      await stack.assertOnlyAt('cloud-b');
      await stack.assertConnectionKept(statusBefore, 50);
    });
  });

  describe('a request that cannot be served', () => {
    it('is refused at inventory, naming what is missing, and changes nothing in either cloud', async () => {
      const snapshot = async () => Promise.all(['cloud-a', 'cloud-b'].map((c) => stack.cloud(c).controlPlane.state.read()));
      const before = await snapshot();
      const handle = await startMigration(stack.temporal, { name: 'ghost', source: 'cloud-b', destination: 'cloud-a', containers: ['ghost'] });
      await assert.rejects(handle.result(), (err: unknown) => {
        assert.ok(err instanceof WorkflowFailedError);
        assert.match(String(err.cause?.message), /container\(s\) ghost not found in cloud-b/);
        return true;
      });
      assert.deepEqual(await snapshot(), before);
      assert.equal(await stack.cloud('cloud-b').runtime.status('kv'), 'running');
      assert.ok(!existsSync(path.join(stack.cloud('cloud-a').workDir, handle.workflowId)));
    });

    it('refuses a VI the source does not have, naming those it has', async () => {
      const handle = await startMigration(stack.temporal, { name: 'ghost-vi', vi: 'ghost', source: 'cloud-b', destination: 'cloud-a' });
      await assert.rejects(handle.result(), (err: unknown) => {
        assert.ok(err instanceof WorkflowFailedError);
        assert.match(String(err.cause?.message), /no VI "ghost" in cloud-b \(it has: demo\)/);
        return true;
      });
      assert.equal(await stack.cloud('cloud-b').runtime.status('kv'), 'running');
    });
  });

  describe("Temporal across the host link (the relay's mutual TLS; the link is reachable from the WAN)", () => {
    const theirs = anotherAuthority();
    const relay = () => `${stack.record.hostAddress}:${TEMPORAL_PORT}`;

    it("answers a client that presents MigraVI's certificate (what every cloud worker does)", async () => {
      assert.equal(await temporalAnswers(relay(), await migraviTls()), 'connected');
    });

    it('refuses a client without a certificate, one whose certificate another authority signed, and one without TLS', async () => {
      await assertStrangersRefused(relay(), await theirs());
    });
  });

  describe("a peer's way into a cloud (sshd, from inside the peer's namespace)", () => {
    type Attempt = { connected: boolean; error?: string; puts: Record<string, string>; symlink?: string };
    const INBOX = 'peer-login-test/kv';
    let inbox: string;
    let endpoint: TransferEndpoint;
    /** Logs in to cloud-b from cloud-a's namespace, as its worker would, and tries `request`. */
    const fromCloudA = async (request: { endpoint: TransferEndpoint; key: string; puts?: string[]; symlink?: [string, string] }): Promise<Attempt> => {
      const netns = stack.record.clouds.find((c) => c.name === 'cloud-a')!.netns;
      const { stdout } = await run('nsenter', [`--net=/run/netns/${netns}`, process.execPath, path.join(__dirname, 'peer-login.js'), JSON.stringify(request)]);
      // ssh2-sftp-client prints its own lines ("Global end listener…") after ours.
      return JSON.parse(stdout.split('\n').find((line) => line.startsWith('{'))!) as Attempt;
    };
    const keyAtoB = () => stack.cloud('cloud-a').transferKeyFor('cloud-b');

    before(async () => {
      inbox = (await stack.cloud('cloud-b').controlPlane.peerInbox('cloud-a', INBOX))!;
      assert.ok(inbox, 'cloud-b has no inbox for cloud-a');
      endpoint = stack.cloud('cloud-b').controlPlane.transferEndpoint(inbox, 'cloud-a');
    });
    after(async () => {
      if (inbox) await rm(path.dirname(inbox), { recursive: true, force: true });
    });

    it('lets cloud-a write into its inbox as its own unprivileged account, in a directory only that account may enter', async () => {
      assert.notEqual(endpoint.username, 'root');
      const got = await fromCloudA({ endpoint, key: keyAtoB(), puts: [`${endpoint.directory}/ok.txt`] });
      assert.equal(got.error, undefined);
      assert.deepEqual(got.puts, { [`${endpoint.directory}/ok.txt`]: 'ok' });
      const written = await stat(path.join(inbox, 'ok.txt'));
      assert.equal(written.uid, Number((await run('id', ['-u', endpoint.username])).stdout.trim()), 'the file is not the peer account\'s');
      assert.notEqual(written.uid, 0);
      const incoming = await stat(path.resolve(inbox, ...INBOX.split('/').map(() => '..'))); // <chroot>/incoming
      assert.equal(incoming.uid, written.uid, 'the inbox is not the peer account\'s');
      assert.equal(incoming.mode & 0o777, 0o700, `the inbox's mode is ${(incoming.mode & 0o777).toString(8)}`);
    });

    it('confines it to its chroot: no write beside the inbox, above it, or by a path climbing out; no link', async () => {
      const chroot = endpoint.directory.split('/')[1]!; // "incoming"
      const got = await fromCloudA({ endpoint, key: keyAtoB(), puts: ['/escape.txt', '/../../../../tmp/escape.txt', '/etc/escape.txt'], symlink: ['/etc/shadow', `${endpoint.directory}/link`] });
      assert.ok(got.connected, got.error);
      for (const [target, result] of Object.entries(got.puts)) assert.notEqual(result, 'ok', `a peer wrote ${target}`);
      assert.notEqual(got.symlink, 'ok', 'a peer made a symlink');
      assert.equal(chroot, 'incoming');
      for (const file of ['/tmp/escape.txt', '/escape.txt', '/etc/escape.txt', path.join(inbox, 'link')]) assert.ok(!existsSync(file), `${file} exists`);
    });

    it('refuses root, the key of another pair of clouds, and a host key other than the one announced', async () => {
      const asRoot = await fromCloudA({ endpoint: { ...endpoint, username: 'root' }, key: keyAtoB() });
      assert.equal(asRoot.connected, false, 'root logged in');
      assert.match(String(asRoot.error), /authentication/i);
      // cloud-b's own key for cloud-a is not cloud-a's key for cloud-b.
      const otherPair = await fromCloudA({ endpoint, key: stack.cloud('cloud-b').transferKeyFor('cloud-a') });
      assert.equal(otherPair.connected, false, 'another pair\'s key logged in');
      assert.match(String(otherPair.error), /authentication/i);
      const impostor = await fromCloudA({ endpoint: { ...endpoint, hostKeySha256: createHash('sha256').update('another host').digest('base64') }, key: keyAtoB() });
      assert.equal(impostor.connected, false, 'an unknown host key was accepted');
      assert.match(String(impostor.error), /host|verif/i);
    });
  });
});
