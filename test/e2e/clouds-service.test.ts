/**
 * The embedded clouds as a service, driven by hand as a new user would: clouds up, a VI deployed
 * and migrated from "another shell" with the CLI (its live progress watched through the client
 * API), moved back from the Web UI's Start Workflow form in a real browser and found in its list
 * by search attributes, a cloud evacuated by a schedule while the orchestrator dies, a worker that
 * dies started again by the supervisor, clouds down. Checked in the kernel and the runtimes: each
 * worker's process and namespace, every VI's placement, nothing left after down.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { loadDataConverter } from '../../lib/temporal-access';
import { chromium } from 'playwright-core';
import YAML from 'yaml';
import { liveProgress, type LiveProgress } from '../../client/migravi-client';
import { run } from '../../lib/exec';
import { demoRootfs, testbedsDir } from '../../lib/paths';
import { isAlive, waitFor } from '../../lib/processes';
import type { EvacuationScheduleSummary } from '../../client/evacuations';
import type { EvacuationProgress, EvacuationReport } from '../../lib/evacuation';
import type { MigrationReport } from '../../lib/types';
import type { CloudsStatus } from '../../providers/local/clouds-service';
import { openLocalCloud } from '../../providers/local/local-cloud';
import { readTestbed } from '../../providers/local/testbed';
import { E2E_HOST_LINK } from './stack';

const cli = path.join(__dirname, '..', '..', 'client', 'cli.js');
const ID = 'mvsvc';
const TEMPORAL = '127.0.0.1:7253';
/** Slow enough that a 64 MiB image takes seconds on the link: the progress is seen mid-copy. */
const WAN_MBIT = 100;
const UI = 'http://localhost:8253';
const METRICS_PORT = 9474;

/** A Prometheus sample's value: NAME{…label="value"…} N (the sum over the series that carry `label`). */
function sampleSum(text: string, name: string, label?: string): number {
  return text.split('\n').filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `)).filter((l) => !label || l.includes(label)).reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
}
/** Debian's chromium (scripts/setup.sh), headless, without the background traffic this closed network refuses. */
const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

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
  let cliMigration = '';

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
    const out = await migravi('clouds', 'up', '--id', ID, '--temporal-port', '7253', '--ui-port', '8253', '--codec-port', '8254', '--host-link', E2E_HOST_LINK, '--wan-gateway', '203.0.113.129', '--wan-mbit', String(WAN_MBIT), '--metrics-port', String(METRICS_PORT), '--json');
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
    // No TLS, no authentication: Temporal, its Web UI and the codec endpoint listen on the loopback;
    // only the relay on the host link carries the clouds' workers to the frontend.
    const listening = async (port: number) => (await run('ss', ['-Hltn', `sport = :${port}`])).stdout.split('\n').filter(Boolean).map((line) => line.trim().split(/\s+/)[3]!).sort();
    const hostAddress = (await readTestbed(path.join(testbedsDir, ID)))!.hostAddress;
    assert.deepEqual(await listening(7253), [`127.0.0.1:7253`, `${hostAddress}:7253`].sort());
    assert.deepEqual(await listening(8253), ['127.0.0.1:8253']);
    assert.deepEqual(await listening(8254), ['127.0.0.1:8254']);
    assert.equal(up.temporal.codecEndpoint, 'http://127.0.0.1:8254');
    assert.ok(isAlive(up.temporal.codecPid!), 'the codec server does not run');
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
      const handle = new Client({ connection, dataConverter: await loadDataConverter() }).workflow.getHandle(workflowId);
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
    // The image's total is known once CRIU's dump has ended; while it streams, only bytes and rate are.
    const rated = seenCopies.filter((t) => t.rateBytesPerSecond !== undefined);
    assert.ok(rated.length > 0, `no sample of the running checkpoint copy had its rate: ${JSON.stringify(seenCopies)}`);
    for (const t of rated) assert.ok(t.rateBytesPerSecond! > 0 && t.rateBytesPerSecond! <= ((WAN_MBIT * 1e6) / 8) * 1.1, `rate ${t.rateBytesPerSecond} B/s on a ${WAN_MBIT} Mbit/s link`);
    for (const t of seenCopies.filter((c) => c.totalBytes !== undefined)) {
      assert.equal(t.totalBytes, imageAtDestination, 'the copy\'s total is not the image the destination checked');
      assert.ok(t.sentBytes <= t.totalBytes! && t.etaSeconds !== undefined, `${t.sentBytes} of ${t.totalBytes} sent, eta ${t.etaSeconds}`);
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
    cliMigration = workflowId;
    // The orchestrator's Prometheus endpoint counts it; the cloud workers' export the SDK's activity metrics.
    const metrics = await (await fetch(`http://127.0.0.1:${METRICS_PORT}/metrics`)).text();
    assert.equal(sampleSum(metrics, 'migravi_migrations_started', 'vi="tiny"'), 1, metrics.split('\n').filter((l) => l.startsWith('migravi')).join('\n'));
    assert.equal(sampleSum(metrics, 'migravi_migrations_completed', 'vi="tiny"'), 1);
    assert.equal(sampleSum(metrics, 'migravi_migrations_rolled_back'), 0);
    assert.equal(sampleSum(metrics, 'migravi_group_blackout_count', 'vi="tiny"'), 1);
    assert.equal(sampleSum(metrics, 'migravi_group_blackout_sum', 'vi="tiny"'), report.groups[0]!.frozenMs);
    assert.ok(sampleSum(metrics, 'migravi_link_bytes', 'vi="tiny"') >= imageAtDestination, 'the link bytes counter is below the image the destination checked');
    const cloudMetrics = (await run('ip', ['netns', 'exec', `${ID}-cloud-a`, 'curl', '-sf', `http://127.0.0.1:9464/metrics`])).stdout;
    assert.ok(sampleSum(cloudMetrics, 'temporal_activity_execution_latency_count', 'activity_type="checkpoint"') >= 1, 'cloud-a\'s worker exports no checkpoint activity');
    // Too late to abort: the CLI says the migration refused, and why.
    const abort = await migravi('abort', workflowId, 'too late', '--temporal', TEMPORAL);
    assert.equal(abort.exitCode, 6, abort.stderr);
    assert.match(abort.stderr, /refused abort: the migration has completed already/);
  });

  it("starts a migration from the Web UI's Start Workflow form, finds it in the workflow list by its search attributes, and shows its report decoded through the codec endpoint", async () => {
    const workflowId = `migrate-tiny-ui-${Date.now()}`;
    const plan = { name: 'tiny-back', vi: 'tiny', source: 'cloud-b', destination: 'cloud-a' };
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    const connection = await Connection.connect({ address: TEMPORAL });
    try {
      const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
      await page.goto(`${UI}/namespaces/default/workflows/start-workflow`, { waitUntil: 'networkidle' });
      // The form's fields, as the README gives them.
      await page.fill('#workflowId', workflowId);
      await page.fill('#taskQueue', 'migravi');
      await page.fill('#workflowType', 'migrateInfrastructure');
      await page.click('[aria-label="Data"]');
      await page.keyboard.insertText(JSON.stringify(plan));
      await page.click('h1'); // leaves the editor: the form takes the input
      await page.click('[data-testid=start-workflow-button]');
      const handle = new Client({ connection, dataConverter: await loadDataConverter() }).workflow.getHandle(workflowId);
      await waitFor('the form to start the migration', () => handle.describe().then(() => true, () => false), 30_000, 200);
      await handle.result();
      const stateDir = path.join(testbedsDir, ID);
      assert.equal(await openLocalCloud(stateDir, 'cloud-a').runtime.status('kv'), 'running');
      assert.equal(await openLocalCloud(stateDir, 'cloud-b').runtime.status('kv'), 'absent');
      // The list, filtered by the migration's own search attributes: this one, not the CLI's (from cloud-a).
      const query = 'MigraviVi = "tiny" AND MigraviSource = "cloud-b" AND MigraviState = "completed"';
      const rowsFor = async () => {
        await page.goto(`${UI}/namespaces/default/workflows?query=${encodeURIComponent(query)}`, { waitUntil: 'networkidle' });
        return page.$$eval('a[href*="/workflows/migrate-tiny"]', (links) => [...new Set(links.map((a) => decodeURIComponent(a.getAttribute('href')!.split('/')[4]!)))]);
      };
      let rows: string[] = [];
      await waitFor('the Web UI to list the migration under its search attributes', async () => (rows = await rowsFor()).includes(workflowId), 30_000, 500);
      assert.deepEqual(rows, [workflowId], `listed: ${rows.join(', ')} (the CLI's migration ${cliMigration} left cloud-a)`);
      // Its report is stored encrypted; the Web UI shows it decoded, through the codec endpoint `clouds up` runs.
      const raw = await connection.workflowService.getWorkflowExecutionHistory({ namespace: 'default', execution: { workflowId } });
      const result = raw.history?.events?.find((e) => e.workflowExecutionCompletedEventAttributes)?.workflowExecutionCompletedEventAttributes?.result?.payloads?.[0];
      assert.equal(Buffer.from(result?.metadata?.encoding ?? []).toString(), 'binary/encrypted');
      assert.ok(!Buffer.from(result?.data ?? []).includes('wallMs'), 'the stored report is readable');
      await page.goto(`${UI}/namespaces/default/workflows/${workflowId}`, { waitUntil: 'networkidle' });
      // The report's first lines, in the page's Result card as a person sees them.
      await waitFor('the Web UI to show the decoded report', async () => /"plan": "tiny-back",\s*"source": "cloud-b",\s*"destination": "cloud-a",\s*"startedAt": \d+,\s*"wallMs": \d+/.test(await page.locator('body').innerText()), 30_000, 500).catch(async (err: unknown) => {
        throw new Error(`${(err as Error).message}; the page says:\n${(await page.locator('body').innerText()).slice(0, 3000)}`);
      });
    } finally {
      await browser.close();
      await connection.close();
    }
  });

  it('evacuates a cloud on a schedule triggered now: two VIs end at the target, one that cannot move is rolled back and reported; the orchestrator dies meanwhile', async () => {
    const stateDir = path.join(testbedsDir, ID);
    const vi = (name: string, container: string, cidr: string) => ({
      name,
      networks: [{ name: `${name}-net`, cidr }],
      containers: [{ name: container, rootfs: demoRootfs, command: ['/bin/kv-server', '7000', '0'], readonlyRootfs: true, networks: [{ network: `${name}-net` }] }],
    });
    // alpha can move; beta cannot: cloud-b already runs a container named "be" (VI squat).
    for (const [cloud, spec] of [['cloud-a', vi('alpha', 'al', '10.78.1.0/24')], ['cloud-a', vi('beta', 'be', '10.78.2.0/24')], ['cloud-b', vi('squat', 'be', '10.78.3.0/24')]] as const) {
      const file = path.join(tmp, `${spec.name}.vi.yaml`);
      await writeFile(file, YAML.stringify(spec));
      const deploy = await migravi('deploy', cloud, file, '--temporal', TEMPORAL);
      assert.equal(deploy.exitCode, 0, deploy.stderr);
    }
    const create = await migravi('schedule', 'create', 'nightly', '--source', 'cloud-a', '--to', 'cloud-b', '--every', '24h', '--temporal', TEMPORAL, '--json');
    assert.equal(create.exitCode, 0, create.stderr);
    assert.equal((JSON.parse(create.stdout) as EvacuationScheduleSummary).paused, false);
    const trigger = await migravi('schedule', 'trigger', 'nightly', '--temporal', TEMPORAL);
    assert.equal(trigger.exitCode, 0, trigger.stderr);
    let started = '';
    await waitFor('the schedule to start its evacuation', async () => {
      const d = JSON.parse((await migravi('schedule', 'describe', 'nightly', '--temporal', TEMPORAL, '--json')).stdout) as EvacuationScheduleSummary;
      started = d.recent[0]?.workflowId ?? '';
      return started !== '';
    }, 30_000, 250);
    const connection = await Connection.connect({ address: TEMPORAL });
    let report: EvacuationReport;
    try {
      const handle = new Client({ connection, dataConverter: await loadDataConverter() }).workflow.getHandle(started);
      await waitFor('a migration of the evacuation to run', async () => ((await handle.query<EvacuationProgress>('progress').catch(() => undefined))?.moving.length ?? 0) > 0, 60_000, 100);
      const orchestrator = (await status()).processes.find((p) => p.name === 'orchestrator worker')!;
      process.kill(orchestrator.pid!, 'SIGKILL'); // started by this test's service; the supervisor starts another
      report = (await handle.result()) as EvacuationReport;
      const restarted = (await status()).processes.find((p) => p.name === 'orchestrator worker')!;
      assert.ok(restarted.pid !== orchestrator.pid && restarted.restarts === orchestrator.restarts + 1, 'the orchestrator was not restarted');
      seen.push(restarted.pid!);
    } finally {
      await connection.close();
    }
    assert.deepEqual(report.moved.map((m) => m.vi), ['alpha', 'tiny']);
    assert.deepEqual(report.rolledBack.map((m) => m.vi), ['beta']);
    assert.match(report.rolledBack[0]!.reason, /a container named be already exists in cloud-b/);
    assert.deepEqual(report.skipped, []);
    const a = openLocalCloud(stateDir, 'cloud-a').runtime;
    const b = openLocalCloud(stateDir, 'cloud-b').runtime;
    assert.deepEqual([await b.status('al'), await b.status('kv'), await a.status('al'), await a.status('kv')], ['running', 'running', 'absent', 'absent']);
    assert.equal(await a.status('be'), 'running', 'beta does not run at its source any more');
    assert.equal(await b.status('be'), 'running', "squat's container at cloud-b was touched");

    // Now by hand: a VI the cloud does not host is skipped, and said to be.
    const now = await migravi('evacuate', 'cloud-b', '--to', 'cloud-a', '--vi', 'ghost', '--temporal', TEMPORAL, '--json');
    assert.equal(now.exitCode, 0, now.stderr);
    const skipped = (JSON.parse(now.stdout) as { report: EvacuationReport }).report;
    assert.deepEqual([skipped.moved, skipped.rolledBack, skipped.skipped.map((x) => x.vi)], [[], [], ['ghost']]);
    assert.match(skipped.skipped[0]!.reason, /cloud-b hosts no VI ghost \(it hosts alpha, squat, tiny\)/);

    assert.equal((await migravi('schedule', 'pause', 'nightly', '--note', 'maintenance', '--temporal', TEMPORAL)).exitCode, 0);
    const paused = JSON.parse((await migravi('schedule', 'list', '--temporal', TEMPORAL, '--json')).stdout) as EvacuationScheduleSummary[];
    assert.deepEqual(paused.map((x) => [x.scheduleId, x.paused, x.note]), [['nightly', true, 'maintenance']]);
    assert.equal((await migravi('schedule', 'delete', 'nightly', '--temporal', TEMPORAL)).exitCode, 0);
    const gone = await migravi('schedule', 'describe', 'nightly', '--temporal', TEMPORAL);
    assert.equal(gone.exitCode, 5, gone.stderr);
  });

  it('starts a worker that died again, and the cloud answers through the new one', async () => {
    const before = (await status()).processes.find((p) => p.name === 'cloud worker cloud-a')!;
    process.kill(before.pid!, 'SIGKILL'); // started by this test's service
    await waitFor('the supervisor to start the worker of cloud-a again', async () => {
      const now = (await status()).processes.find((p) => p.name === 'cloud worker cloud-a')!;
      return now.running && now.pid !== before.pid;
    }, 60_000, 200);
    const after = (await status()).processes.find((p) => p.name === 'cloud worker cloud-a')!;
    seen.push(after.pid!);
    assert.equal(after.restarts, before.restarts + 1);
    assert.equal(netnsOfPid(after.pid!), netnsInode(`${ID}-cloud-a`));
    const list = await migravi('list', 'cloud-a', '--temporal', TEMPORAL, '--json');
    assert.equal(list.exitCode, 0, list.stderr);
    assert.deepEqual((JSON.parse(list.stdout) as { containers: Array<{ name: string; status: string }> }).containers.map((c) => [c.name, c.status]), [['be', 'running']]);
  });

  it('takes everything down: no worker, supervisor, Temporal server or namespace of it is left', async () => {
    const last = await status();
    const down = await migravi('clouds', 'down', '--id', ID);
    assert.equal(down.exitCode, 0, down.stderr);
    for (const pid of [...seen, last.supervisor!.pid, last.temporal!.pid!, last.temporal!.codecPid!]) assert.ok(!isAlive(pid), `pid ${pid} still runs`);
    const namespaces = (await run('ip', ['netns', 'list'])).stdout;
    assert.doesNotMatch(namespaces, new RegExp(`^${ID}-`, 'm'));
    assert.ok(!existsSync(path.join(testbedsDir, ID, 'service.json')));
    const after = await migravi('clouds', 'status', '--id', ID);
    assert.equal(after.exitCode, 1, 'status says up after down');
  });
});
