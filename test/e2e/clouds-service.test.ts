/**
 * The embedded clouds as a service, driven by hand through `migravi` as a new user would: clouds
 * up, a VI deployed and migrated from "another shell", a worker that dies started again by the
 * supervisor, clouds down. Checked in the kernel and the runtimes: each worker's process and the
 * namespace it runs in, the VI's placement, nothing left after down.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import YAML from 'yaml';
import { liveProgress, type LiveProgress } from '../../client/migravi-client';
import { run } from '../../lib/exec';
import { demoRootfs, testbedsDir } from '../../lib/paths';
import { isAlive, waitFor } from '../../lib/processes';
import type { MigrationReport } from '../../lib/types';
import type { CloudsStatus } from '../../providers/local/clouds-service';
import { openLocalCloud } from '../../providers/local/local-cloud';
import { E2E_HOST_LINK } from './stack';

const cli = path.join(__dirname, '..', '..', 'client', 'cli.js');
const ID = 'mvsvc';
const TEMPORAL = '127.0.0.1:7253';
/** Slow enough that a 64 MiB image takes seconds on the link: the progress is seen mid-copy. */
const WAN_MBIT = 100;

const migravi = (...args: string[]) => run(process.execPath, [cli, ...args], { allowFailure: true });
const status = async () => JSON.parse((await migravi('clouds', 'status', '--id', ID, '--json')).stdout) as CloudsStatus;
/** The network namespace a process runs in, as the kernel names it (its inode). */
const netnsOfPid = (pid: number) => readlinkSync(`/proc/${pid}/ns/net`);
const netnsInode = (name: string) => `net:[${statSync(`/run/netns/${name}`).ino}]`;

describe('the embedded clouds as a service: migravi clouds up, by hand, clouds down', function () {
  this.timeout(300_000);
  let tmp: string;
  let up: CloudsStatus;
  const seen: number[] = [];

  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'migravi-svc-'));
  });

  after(async () => {
    const down = await migravi('clouds', 'down', '--id', ID);
    await rm(tmp, { recursive: true, force: true });
    await rm(`/var/lib/migravi/temporal-${ID}`, { recursive: true, force: true });
    if (up?.logDir) await rm(up.logDir, { recursive: true, force: true });
    assert.equal(down.exitCode, 0, down.stderr);
  });

  it('brings up the clouds, Temporal and every worker, each worker inside its own cloud', async () => {
    const out = await migravi('clouds', 'up', '--id', ID, '--temporal-port', '7253', '--ui-port', '8253', '--host-link', E2E_HOST_LINK, '--wan-gateway', '203.0.113.129', '--wan-mbit', String(WAN_MBIT), '--json');
    assert.equal(out.exitCode, 0, out.stderr);
    up = JSON.parse(out.stdout) as CloudsStatus;
    assert.ok(up.up, out.stdout);
    assert.deepEqual(up.processes.map((p) => p.name), ['orchestrator worker', 'cloud worker cloud-a', 'cloud worker cloud-b']);
    for (const p of up.processes) {
      seen.push(p.pid!);
      const cmdline = readFileSync(`/proc/${p.pid}/cmdline`, 'utf8').split('\0');
      assert.ok(cmdline.some((a) => a.endsWith(p.name === 'orchestrator worker' ? 'orchestrator.js' : 'cloud-worker.js')), `${p.name}: ${cmdline.join(' ')}`);
    }
    for (const cloud of ['cloud-a', 'cloud-b']) {
      const worker = up.processes.find((p) => p.name === `cloud worker ${cloud}`)!;
      assert.equal(netnsOfPid(worker.pid!), netnsInode(`${ID}-${cloud}`), `the worker of ${cloud} does not run in its cloud's namespace`);
    }
    assert.ok(up.temporal?.running && isAlive(up.temporal.pid!), 'the Temporal server does not run');
    const again = await migravi('clouds', 'up', '--id', ID, '--json');
    assert.equal(again.exitCode, 0, again.stderr);
    assert.equal((JSON.parse(again.stdout) as CloudsStatus).supervisor?.pid, up.supervisor?.pid, 'a second up started another supervisor');
  });

  it('deploys a VI and migrates it from another shell, with the CLI alone; its progress shows the running copy, its rate and time left', async () => {
    const viFile = path.join(tmp, 'tiny.vi.yaml');
    const planFile = path.join(tmp, 'tiny.plan.yaml');
    await writeFile(viFile, YAML.stringify({
      name: 'tiny',
      networks: [{ name: 'tiny-net', cidr: '10.77.0.0/24' }],
      containers: [{ name: 'kv', rootfs: demoRootfs, command: ['/bin/kv-server', '7000', '64'], readonlyRootfs: true, networks: [{ network: 'tiny-net' }] }],
    }));
    await writeFile(planFile, YAML.stringify({ name: 'tiny', vi: 'tiny', source: 'cloud-a', destination: 'cloud-b' }));
    const deploy = await migravi('deploy', 'cloud-a', viFile, '--temporal', TEMPORAL);
    assert.equal(deploy.exitCode, 0, deploy.stderr);
    const stateDir = path.join(testbedsDir, ID);
    assert.equal(await openLocalCloud(stateDir, 'cloud-a').runtime.status('kv'), 'running');
    // `migravi migrate --json` as a script would run it (stderr not a terminal: plain lines);
    // meanwhile the client API's live progress is sampled, as a service would watch it.
    const child = spawn(process.execPath, [cli, 'migrate', planFile, '--temporal', TEMPORAL, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number>((resolve) => child.on('close', (code) => resolve(code ?? -1)));
    let ended = false;
    void exited.then(() => (ended = true));
    await waitFor('the CLI to say which migration it started', () => /started (\S+)/.test(stderr), 30_000, 50);
    const workflowId = /started (\S+)/.exec(stderr)![1]!;
    const connection = await Connection.connect({ address: TEMPORAL });
    const samples: LiveProgress[] = [];
    try {
      const handle = new Client({ connection }).workflow.getHandle(workflowId);
      while (!ended) {
        const sample = await liveProgress(handle).catch(() => undefined); // before its first task: no answer yet
        if (sample) samples.push(sample);
        await new Promise((resolve) => setTimeout(resolve, 100)); // the sampling period, not a wait for a condition
      }
      samples.push(await liveProgress(handle));
    } finally {
      await connection.close();
    }
    assert.equal(await exited, 0, `${stdout}\n${stderr}`);
    const { report } = JSON.parse(stdout) as { report: MigrationReport };
    // The image's size as the destination re-hashed it at rest; the link's shaped rate.
    const imageAtDestination = report.containers[0]!.checks.find((c) => c.kind === 'checkpoint')!.verifiedBytes;
    const seenCopies = samples.flatMap((p) => p.containers.find((c) => c.name === 'kv')?.transfers.filter((t) => t.kind === 'checkpoint') ?? []);
    assert.ok(seenCopies.length > 0, 'no sample saw the checkpoint being copied');
    const sized = seenCopies.filter((t) => t.totalBytes !== undefined && t.rateBytesPerSecond !== undefined && t.etaSeconds !== undefined);
    assert.ok(sized.length > 0, `no sample of the running checkpoint copy had its total, rate and time left: ${JSON.stringify(seenCopies)}`);
    for (const t of sized) {
      assert.equal(t.totalBytes, imageAtDestination, 'the copy\'s total is not the image the destination checked');
      assert.ok(t.sentBytes <= t.totalBytes!, `${t.sentBytes} of ${t.totalBytes} sent`);
      assert.ok(t.rateBytesPerSecond! > 0 && t.rateBytesPerSecond! <= ((WAN_MBIT * 1e6) / 8) * 1.1, `rate ${t.rateBytesPerSecond} B/s on a ${WAN_MBIT} Mbit/s link`);
    }
    for (let i = 1; i < seenCopies.length; i++) assert.ok(seenCopies[i]!.sentBytes >= seenCopies[i - 1]!.sentBytes, 'the bytes sent went down');
    const last = samples[samples.length - 1]!.containers.find((c) => c.name === 'kv')!;
    assert.equal(last.state, 'moved');
    assert.ok(last.bytesMoved >= imageAtDestination, `kv's bytes on the link (${last.bytesMoved}) are fewer than its image (${imageAtDestination})`);
    // Plain lines, not bars, when the output is not a terminal: each stage once, and the copy with its size.
    assert.equal(stderr.match(/^ {2}kv: checkpoint$/gm)?.length, 1, `the checkpoint stage not said exactly once:\n${stderr}`);
    assert.match(stderr, /^ {2}kv: moved$/m);
    assert.match(stderr, /^ {2}kv: checkpoint [\d.]+ (of [\d.]+ )?MiB/m);
    assert.equal(await openLocalCloud(stateDir, 'cloud-b').runtime.status('kv'), 'running');
    assert.equal(await openLocalCloud(stateDir, 'cloud-a').runtime.status('kv'), 'absent');
  });

  it('starts a worker that died again, and the cloud answers through the new one', async () => {
    const before = (await status()).processes.find((p) => p.name === 'cloud worker cloud-b')!;
    process.kill(before.pid!, 'SIGKILL'); // started by this test's service
    await waitFor('the supervisor to start the worker of cloud-b again', async () => {
      const now = (await status()).processes.find((p) => p.name === 'cloud worker cloud-b')!;
      return now.running && now.pid !== before.pid;
    }, 60_000, 200);
    const after = (await status()).processes.find((p) => p.name === 'cloud worker cloud-b')!;
    seen.push(after.pid!);
    assert.equal(after.restarts, before.restarts + 1);
    assert.equal(netnsOfPid(after.pid!), netnsInode(`${ID}-cloud-b`));
    const list = await migravi('list', 'cloud-b', '--temporal', TEMPORAL, '--json');
    assert.equal(list.exitCode, 0, list.stderr);
    assert.deepEqual((JSON.parse(list.stdout) as { containers: Array<{ name: string; status: string }> }).containers.map((c) => [c.name, c.status]), [['kv', 'running']]);
  });

  it('takes everything down: no worker, supervisor, Temporal server or namespace of it is left', async () => {
    const last = await status();
    const down = await migravi('clouds', 'down', '--id', ID);
    assert.equal(down.exitCode, 0, down.stderr);
    for (const pid of [...seen, last.supervisor!.pid, last.temporal!.pid!]) assert.ok(!isAlive(pid), `pid ${pid} still runs`);
    const namespaces = (await run('ip', ['netns', 'list'])).stdout;
    assert.doesNotMatch(namespaces, new RegExp(`^${ID}-`, 'm'));
    assert.ok(!existsSync(path.join(testbedsDir, ID, 'service.json')));
    const after = await migravi('clouds', 'status', '--id', ID);
    assert.equal(after.exitCode, 1, 'status says up after down');
  });
});
