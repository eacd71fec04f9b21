/**
 * The real stack the end-to-end tests share: two embedded clouds, the Temporal dev server (SQLite
 * on disk, so a restart keeps its state), the orchestrator and one worker per cloud inside its
 * cloud, the demo VI (kv) in cloud-a and its client holding one connection. A supervisor restarts
 * a worker that died (as systemd would) unless the test holds it down. Faults are set through the
 * fault file the workers were started with (lib/faults.ts). Everything is torn down by PID.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, readdir, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import type { DataConverter } from '@temporalio/common';
import { temporal } from '@temporalio/proto';
import { ensureKeyRing } from '../../lib/payload-keys';
import { loadDataConverter } from '../../lib/temporal-access';
import { migrationIdOf } from '../../lib/plan';
import type { ClientStatus } from '../../demo/client';
import { KV_IP, KV_PORT } from '../../demo/demo-vi';
import { deployVi } from '../../client/migravi-client';
import { deployDemoVi, plugClientPort, startDemoClient, type DemoClient } from '../../demo/scenario';
import { cloudWorkerTlsArgs, relayTemporalToClouds, startCloudWorkers, startOrchestratorWorker, startTemporalServer } from '../../providers/local/embedded-stack';
import { startProductionTemporal, type ProductionTemporal } from '../../lib/temporal-production';
import { loadTlsConfig } from '../../lib/temporal-tls';
import { run } from '../../lib/exec';
import type { Fault } from '../../lib/faults';
import { criuPath, testbedsDir } from '../../lib/paths';
import type { ViSpecInput } from '../../lib/vi-spec';
import { isAlive, stopPid, waitFor } from '../../lib/processes';
import { openLocalCloud } from '../../providers/local/local-cloud';
import { registerProcess, testbedDown, testbedUp, unregisterProcess, type TestbedRecord } from '../../providers/local/testbed';

export type Role = 'orchestrator' | 'cloud-a' | 'cloud-b';
export const CLOUDS = ['cloud-a', 'cloud-b'] as const;
export const TEMPORAL_PORT = 7243;
/** The tests' host link (the demo's testbed uses the default one, so both can be up at once). */
export const E2E_HOST_LINK = '198.18.0.4/30';

export class E2eStack {
  readonly connection: Connection;
  readonly temporal: Client;
  readonly client: DemoClient;
  /** Worker restarts done by the supervisor, in order. */
  readonly restarts: Role[] = [];
  private readonly pids: Record<Role, number>;
  private readonly held = new Set<Role>();
  private supervisor?: NodeJS.Timeout;
  private restarting: Promise<void> = Promise.resolve();
  private busy = false;
  /** The production-style cluster, when the stack runs on it instead of the dev server. */
  readonly production?: ProductionTemporal;

  private constructor(
    readonly record: TestbedRecord,
    readonly tmp: string,
    private temporalPid: number | undefined,
    readonly faultFile: string,
    parts: { connection: Connection; dataConverter: DataConverter; client: DemoClient; pids: Record<Role, number>; production?: ProductionTemporal },
  ) {
    this.production = parts.production;
    this.connection = parts.connection;
    this.temporal = new Client({ connection: parts.connection, dataConverter: parts.dataConverter });
    this.client = parts.client;
    this.pids = parts.pids;
  }

  /**
   * `vi`: deploys this VI (through cloud-a's worker, DNS names included; `prepare` runs first, on
   * the testbed's state directory) instead of the demo's counter service.
   */
  static async start(opts: {
    id: string;
    ballastMiB: number;
    wanRateMbit?: number;
    vi?: (stateDir: string) => Promise<ViSpecInput>;
    /** The WAN's gateway (default 203.0.113.129; the development OpenStack's external network is 203.0.113.1/25). */
    wanGateway?: string;
    /**
     * Runs once the testbed is up, before any worker starts (e.g. makes clouds into OpenStack
     * projects); the workers start from the record it returns.
     */
    prepare?: (record: TestbedRecord) => Promise<TestbedRecord>;
    /** Plugs the client's port into the VI's network at cloud-a, after a `vi` is deployed (default: the embedded cloud's control plane). */
    plugClient?: (record: TestbedRecord) => Promise<void>;
    /** The client holding its one connection (default: the counter service's, on the private network at cloud-a). */
    client?: (record: TestbedRecord) => Promise<DemoClient>;
    /**
     * 'production': the Temporal server built from its Go module, on PostgreSQL, with mutual TLS
     * on every port (lib/temporal-production.ts); every worker and client connects with MigraVI's
     * certificate. Default 'dev': the CLI's dev server on SQLite, behind the relay's TLS.
     */
    temporal?: 'dev' | 'production';
  }): Promise<E2eStack> {
    const stateDir = path.join(testbedsDir, opts.id);
    await testbedDown(stateDir, opts.id); // leftovers of an interrupted run
    await ensureKeyRing(); // the installation's payload keys (set-up makes them once)
    const tmp = await mkdtemp(path.join(os.tmpdir(), `migravi-${opts.id}-`));
    const faultFile = path.join(tmp, 'faults.json');
    const env = { ...process.env, MIGRAVI_FAULT_FILE: faultFile };
    let record = await testbedUp({ id: opts.id, stateDir, clouds: [...CLOUDS], wanGateway: opts.wanGateway ?? '203.0.113.129', wanPrefixLength: 25, wanRateMbit: opts.wanRateMbit ?? 1000, criuPath, hostLink: E2E_HOST_LINK });
    let temporalPid: number | undefined;
    let production: ProductionTemporal | undefined;
    let connection: Connection | undefined;
    let stack: E2eStack;
    try {
      if (opts.prepare) record = await opts.prepare(record);
      if (opts.temporal === 'production') {
        // PostgreSQL's account walks through the stack's directory to its data (it lists nothing).
        await chmod(tmp, 0o711);
        production = await startProductionTemporal({ dir: path.join(tmp, 'temporal-production'), port: TEMPORAL_PORT, postgresPort: TEMPORAL_PORT + 50 });
      } else {
        temporalPid = await startTemporalServer(temporalOptions(tmp));
      }
      await relayTemporalToClouds(record, TEMPORAL_PORT, tmp, { serverTls: Boolean(production) });
      const orchestrator = await startOrchestratorWorker(record, `127.0.0.1:${TEMPORAL_PORT}`, path.join(tmp, 'orchestrator.log'), env, orchestratorTls(production));
      const workers = await startCloudWorkers(record, TEMPORAL_PORT, tmp, undefined, env);
      connection = await Connection.connect({ address: `127.0.0.1:${TEMPORAL_PORT}`, ...(production ? { tls: await loadTlsConfig(production.tls) } : {}) });
      const dataConverter = await loadDataConverter();
      if (opts.vi) {
        const vi = await opts.vi(stateDir);
        const temporal = new Client({ connection, dataConverter });
        await deployVi(temporal, 'cloud-a', vi);
        await (opts.plugClient ?? ((r: TestbedRecord) => plugClientPort(r, 'cloud-a')))(record);
      } else {
        await deployDemoVi(record, 'cloud-a', opts.ballastMiB);
      }
      const client = await (opts.client ?? ((r: TestbedRecord) => startDemoClient(r, 'cloud-a')))(record);
      stack = new E2eStack(record, tmp, temporalPid, faultFile, {
        connection,
        dataConverter,
        client,
        pids: { orchestrator, 'cloud-a': workers['cloud-a']!, 'cloud-b': workers['cloud-b']! },
        production,
      });
    } catch (err) {
      // A stack that did not come up is torn down here: its test's after hook never sees it.
      await printLogTails([tmp, ...record.clouds.map((c) => c.dir)]);
      await connection?.close().catch(() => undefined);
      await testbedDown(stateDir, opts.id);
      if (temporalPid) await stopPid(temporalPid);
      await production?.stop();
      await rm(tmp, { recursive: true, force: true });
      throw err;
    }
    stack.supervisor = setInterval(() => stack.supervise(), 200);
    return stack;
  }

  /**
   * A workflow's history as the server stores and serves it, read without any codec: what
   * anyone with Temporal's database or the gRPC port sees.
   */
  async rawHistory(workflowId: string): Promise<Buffer> {
    const events: temporal.api.history.v1.IHistoryEvent[] = [];
    let nextPageToken: Uint8Array | undefined;
    do {
      const page = await this.connection.workflowService.getWorkflowExecutionHistory({ namespace: 'default', execution: { workflowId }, ...(nextPageToken ? { nextPageToken } : {}) });
      events.push(...(page.history?.events ?? []));
      nextPageToken = page.nextPageToken?.length ? page.nextPageToken : undefined;
    } while (nextPageToken);
    return Buffer.from(temporal.api.history.v1.History.encode({ events }).finish());
  }

  /**
   * What a migration left in a cloud's work and memory directories — its directories, any CRIU
   * image file (`*.img`), any incoming copy — found by walking them, not by asking the workers.
   */
  async migrationLeftovers(cloud: string, workflowId: string): Promise<string[]> {
    const c = this.cloud(cloud);
    const roots = [c.workDir, ...(c.memoryDir && existsSync(c.memoryDir) ? [c.memoryDir] : [])].filter((d) => existsSync(d));
    const migrationId = migrationIdOf(workflowId);
    const { stdout } = await run('find', [...roots, '-mindepth', '1', '(', '-path', `*${migrationId}*`, '-o', '-name', '*.img', '-o', '-name', 'incoming', ')', '-print']);
    return stdout.split('\n').filter(Boolean);
  }

  /** The regular files under a migration's directory in a cloud, while it runs. */
  async migrationFiles(cloud: string, workflowId: string): Promise<string[]> {
    const dir = path.join(this.cloud(cloud).workDir, migrationIdOf(workflowId));
    if (!existsSync(dir)) return [];
    return (await run('find', ['-L', dir, '-type', 'f', '-print'])).stdout.split('\n').filter(Boolean);
  }

  get stateDir(): string {
    return this.record.options.stateDir;
  }

  cloud(name: string) {
    return openLocalCloud(this.stateDir, name);
  }

  pid(role: Role): number {
    return this.pids[role];
  }

  /** Restarts dead workers one at a time, except those the test holds down. */
  private supervise(): void {
    if (this.busy) return;
    const dead = (Object.keys(this.pids) as Role[]).filter((role) => !this.held.has(role) && !isAlive(this.pids[role]));
    if (!dead.length) return;
    this.busy = true;
    this.restarting = (async () => {
      for (const role of dead) {
        await unregisterProcess(this.stateDir, this.pids[role]);
        this.pids[role] = await this.startRole(role);
        this.restarts.push(role);
      }
    })().finally(() => (this.busy = false));
  }

  private async startRole(role: Role): Promise<number> {
    const env = { ...process.env, MIGRAVI_FAULT_FILE: this.faultFile };
    if (role === 'orchestrator') return startOrchestratorWorker(this.record, `127.0.0.1:${TEMPORAL_PORT}`, path.join(this.tmp, 'orchestrator.log'), env, orchestratorTls(this.production));
    return (await startCloudWorkers(this.record, TEMPORAL_PORT, this.tmp, [role], env))[role]!;
  }

  /** Kills a worker now; the supervisor restarts it unless it is held. */
  kill(role: Role): void {
    process.kill(this.pids[role], 'SIGKILL');
  }

  /** Keeps a worker down (a dead cloud agent) until `release`. */
  hold(role: Role): void {
    this.held.add(role);
  }

  release(role: Role): void {
    this.held.delete(role);
  }

  /** Waits until every worker is up again (after kills). */
  async settle(): Promise<void> {
    await waitFor('every worker to be up', async () => {
      await this.restarting;
      return !this.busy && (Object.keys(this.pids) as Role[]).every((role) => this.held.has(role) || isAlive(this.pids[role]));
    }, 60_000, 100);
  }

  /** Replaces the faults the workers will fire (and forgets which ones fired). */
  async setFaults(faults: Array<Omit<Fault, 'id'> & { id?: string }>): Promise<void> {
    await rm(`${this.faultFile}.fired`, { recursive: true, force: true });
    const tmp = `${this.faultFile}.tmp`;
    await writeFile(tmp, JSON.stringify({ faults: faults.map((f, i) => ({ id: `f${i}`, ...f })) }));
    await rename(tmp, this.faultFile);
  }

  async firedFaults(): Promise<string[]> {
    const dir = `${this.faultFile}.fired`;
    return existsSync(dir) ? (await readdir(dir)).sort() : [];
  }

  /** Stops the Temporal server and starts it again on the same SQLite file. */
  async restartTemporal(): Promise<void> {
    if (this.temporalPid === undefined) throw new Error('restartTemporal restarts the dev server only');
    await stopPid(this.temporalPid);
    this.temporalPid = await startTemporalServer(temporalOptions(this.tmp));
  }

  /** Where a container runs (the demo service by default), read from each cloud's runtime. */
  async placement(container = 'kv'): Promise<Record<string, string>> {
    return Object.fromEntries(await Promise.all(CLOUDS.map(async (c) => [c, await this.cloud(c).runtime.status(container)] as const)));
  }

  async whereKvRuns(container = 'kv'): Promise<string> {
    const placement = await this.placement(container);
    const running = Object.entries(placement).filter(([, s]) => s === 'running');
    assert.equal(running.length, 1, `${container} must run in exactly one cloud: ${JSON.stringify(placement)}`);
    return running[0]![0];
  }

  /**
   * The container runs in `cloud` and nothing of it is left in the other: no container, no port,
   * no bundle, no registry entry, no claim, no migration files. Read from the runtime, the kernel
   * and disk.
   */
  async assertOnlyAt(cloud: string, container = 'kv'): Promise<void> {
    const other = CLOUDS.find((c) => c !== cloud)!;
    assert.deepEqual(await this.placement(container), { [cloud]: 'running', [other]: 'absent' });
    const here = this.cloud(cloud);
    const there = this.cloud(other);
    assert.ok((await here.controlPlane.listContainers())[container], `${container} is not registered in ${cloud}`);
    assert.equal((await there.controlPlane.listContainers())[container], undefined, `${container} is still registered in ${other}`);
    assert.ok(!existsSync(`/run/netns/${there.controlPlane.portNetns(container)}`), `${container}'s port namespace is left in ${other}`);
    assert.equal((await there.controlPlane.state.read()).ports[container], undefined, `${container}'s port is left in ${other}'s state`);
    assert.ok(!existsSync(there.runtime.bundleDir(container)), `${container}'s bundle is left in ${other}`);
    // The close guard is off where it runs: its sockets may answer normally again.
    const guard = await run('nft', ['list', 'table', 'inet', 'migravi_guard'], { netns: here.controlPlane.portNetns(container), allowFailure: true });
    assert.notEqual(guard.exitCode, 0, `the close guard is still on in ${cloud}`);
    for (const c of CLOUDS) {
      const dir = this.cloud(c).workDir;
      const leftovers = existsSync(dir) ? (await readdir(dir, { recursive: true })).filter((f) => f !== 'claims' && f !== 'attempts') : [];
      assert.deepEqual(leftovers, [], `${c} kept migration files or claims`);
    }
  }

  /** The client is still on its first connection, every reply was the previous + 1. */
  async assertConnectionKept(before: ClientStatus, replies = 50): Promise<ClientStatus> {
    const after = await this.client.waitForReplies(replies, 60_000);
    assert.equal(after.error, undefined);
    assert.equal(after.localPort, before.localPort, 'the client is on another connection');
    assert.equal(after.discontinuities, 0, 'a reply was not the previous value + 1');
    assert.equal(after.lastValue, after.replies, 'the counter does not match the number of INCRs the client sent');
    return after;
  }

  /** The service re-reads its whole memory ballast: "OK <MiB>" when every word is intact. */
  async kvSelfCheck(): Promise<string> {
    const netns = this.cloud('cloud-a').controlPlane.portNetns('client');
    const reply = await run('busybox', ['sh', '-c', `printf "CHECK\\n" | timeout 5 busybox nc ${KV_IP} ${KV_PORT}`], { netns });
    return reply.stdout.trim();
  }

  /** ICMP "destination unreachable" messages the demo client's kernel received (its namespace's SNMP counters). */
  async clientIcmpUnreachables(): Promise<number> {
    const { stdout } = await run('cat', ['/proc/net/snmp'], { netns: this.cloud('cloud-a').controlPlane.portNetns('client') });
    const [names, values] = stdout.split('\n').filter((line) => line.startsWith('Icmp:')).map((line) => line.split(/\s+/));
    return Number(values![names!.indexOf('InDestUnreachs')]);
  }

  /** Bytes a cloud's WAN interface transmitted (kernel counters): the independent byte count. */
  async wanTxBytes(cloud: string): Promise<number> {
    const { stdout } = await run('ip', ['-j', '-s', 'link', 'show', 'wan0'], { netns: this.cloud(cloud).config.netns });
    return (JSON.parse(stdout) as Array<{ stats64: { tx: { bytes: number } } }>)[0]!.stats64.tx.bytes;
  }

  /** Cuts (or heals) the inter-cloud link at `cloud`'s edge: nothing to or from the peer passes. Temporal stays reachable. */
  async cutLink(cloud: string, cut: boolean): Promise<void> {
    const netns = this.cloud(cloud).config.netns;
    const peer = this.cloud(CLOUDS.find((c) => c !== cloud)!).config.publicIp;
    await run('nft', ['delete', 'table', 'inet', 'migravi_cut'], { netns, allowFailure: true });
    if (cut) {
      await run('nft', ['-f', '-'], {
        netns,
        input: `table inet migravi_cut {\n chain out { type filter hook output priority 0; ip daddr ${peer} drop; }\n chain in { type filter hook input priority 0; ip saddr ${peer} drop; }\n}\n`,
      });
    }
  }

  async stop(showLogs: boolean): Promise<void> {
    clearInterval(this.supervisor);
    await this.restarting.catch(() => undefined);
    if (showLogs) await printLogTails([this.tmp, ...this.record.clouds.map((c) => c.dir)]);
    await this.connection.close().catch(() => undefined);
    await testbedDown(this.stateDir, this.record.options.id); // workers and client, by their recorded PIDs
    if (this.temporalPid !== undefined) await stopPid(this.temporalPid);
    await this.production?.stop();
    await rm(this.tmp, { recursive: true, force: true });
  }

  /** Registers a process a test started, so the teardown stops it by PID. */
  async adopt(name: string, pid: number): Promise<void> {
    await registerProcess(this.stateDir, name, pid);
  }
}

/** The orchestrator, on the loopback, needs TLS only when the server itself requires it. */
const orchestratorTls = (production: ProductionTemporal | undefined) => (production ? cloudWorkerTlsArgs() : undefined);

function temporalOptions(tmp: string) {
  return { port: TEMPORAL_PORT, uiPort: TEMPORAL_PORT + 1000, dbFile: path.join(tmp, 'temporal.sqlite'), logFile: path.join(tmp, 'temporal.log'), headless: true };
}

export async function printLogTails(dirs: string[]): Promise<void> {
  for (const dir of dirs) {
    const files = existsSync(dir) ? (await readdir(dir)).filter((f) => f.endsWith('.log')) : [];
    for (const file of files) {
      const { stdout } = await run('tail', ['-n', '40', path.join(dir, file)], { allowFailure: true });
      console.log(`\n----- ${path.join(dir, file)} (last 40 lines) -----\n${stdout}`);
    }
  }
}
