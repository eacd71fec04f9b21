/** Steps of the demo scenario shared by the demo script and the end-to-end tests. */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { deployVi } from '../activities/deploy-vi';
import { run } from '../lib/exec';
import { startService, waitFor } from '../lib/processes';
import { openLocalCloud } from '../providers/local/local-cloud';
import { registerProcess, type TestbedRecord } from '../providers/local/testbed';
import type { ClientStatus } from './client';
import { clientPort, KV_IP, KV_PORT, loadDemoVi, WEB_IP, WEB_PORT } from './demo-vi';

/**
 * Test set-up: deploys the demo VI file (the counter service, and the web server when asked) in
 * `cloud` with the code the deployVi activity runs, and plugs the clients' port into its network.
 */
export async function deployDemoVi(record: TestbedRecord, cloud: string, ballastMiB = 0, opts: { web?: boolean } = {}): Promise<void> {
  const target = openLocalCloud(record.options.stateDir, cloud);
  await deployVi(target, await loadDemoVi({ ballastMiB, only: opts.web ? ['kv', 'web'] : ['kv'] }));
  await plugClientPort(record, cloud);
}

/** The demo clients' port on the VI's network (not part of the VI: it stands for its users). */
export async function plugClientPort(record: TestbedRecord, cloud: string): Promise<void> {
  const { controlPlane } = openLocalCloud(record.options.stateDir, cloud);
  await controlPlane.ensurePort(clientPort);
  await controlPlane.setPortEnabled(clientPort.name, true);
}

export interface DemoClient {
  pid: number;
  statusFile: string;
  status(): Promise<ClientStatus>;
  /** Waits until the client has received `count` more replies than it had when called. */
  waitForReplies(count: number, timeoutMs?: number): Promise<ClientStatus>;
}

/** What a client keeps its one connection to: the counter service by default. */
export interface ClientTarget {
  name: string;
  ip: string;
  port: number;
  protocol: 'kv' | 'http';
}

export const kvTarget: ClientTarget = { name: 'client', ip: KV_IP, port: KV_PORT, protocol: 'kv' };
export const webTarget: ClientTarget = { name: 'web-client', ip: WEB_IP, port: WEB_PORT, protocol: 'http' };

/**
 * Runs SQL as the demo's application tier does: psql in the app container (the only one the
 * database's rules admit), over db-net. Rows as arrays of fields.
 */
export async function queryDemoDb(record: TestbedRecord, cloud: string, sql: string): Promise<string[][]> {
  const runcRoot = path.join(openLocalCloud(record.options.stateDir, cloud).config.dir, 'runc');
  const env = ['PGHOST=10.88.0.20', 'PGUSER=postgres', 'PGAPPNAME=probe'].flatMap((e) => ['--env', e]);
  const { stdout } = await run('runc', ['--root', runcRoot, 'exec', '--user', '999:999', ...env, 'app', '/usr/lib/postgresql/15/bin/psql', '-tA', '-F', '|', '-c', sql]);
  return stdout.trim().split('\n').filter(Boolean).map((line) => line.split('|'));
}

/** One HTTP request from the outside world (the testbed's Internet) to `address`; the body, or '' when nothing answered. */
export async function getFromOutside(record: TestbedRecord, address: string): Promise<string> {
  const reply = await run('busybox', ['sh', '-c', `printf "GET / HTTP/1.0\\r\\n\\r\\n" | timeout 3 busybox nc -w 2 ${address} 80`], { netns: record.outside.netns, allowFailure: true });
  return reply.stdout.split('\r\n\r\n')[1] ?? '';
}

/** The addresses a name resolves to in the outside world, through its resolver (the cloud's DNS service). */
export async function resolveFromOutside(record: TestbedRecord, name: string): Promise<string[]> {
  // `ip netns exec` (not nsenter): it puts the namespace's own resolv.conf in place.
  const { stdout } = await run('ip', ['netns', 'exec', record.outside.netns, 'busybox', 'nslookup', '-type=a', name], { allowFailure: true });
  // The answer section follows the server's own address lines.
  const answer = stdout.split(/Name:\s+\S+/).slice(1).join('\n');
  return [...answer.matchAll(/Address:\s+(\d+\.\d+\.\d+\.\d+)/g)].map((m) => m[1]!).sort();
}

/** The database's own view of itself: the writer's session, the server's start, its rows. */
export interface DemoDbView {
  /** Backend PID, client address and port, and start of the application's one session. */
  writer: string;
  startedAt: string;
  rows: number;
  maxId: number;
}

export async function demoDbView(record: TestbedRecord, cloud: string): Promise<DemoDbView> {
  const [[writer], [[startedAt, rows, maxId]]] = (await Promise.all([
    queryDemoDb(record, cloud, "SELECT pid || ':' || client_addr || ':' || client_port || ':' || backend_start FROM pg_stat_activity WHERE application_name = 'writer'"),
    queryDemoDb(record, cloud, 'SELECT pg_postmaster_start_time(), count(*), max(id) FROM ticks'),
  ])) as [string[][], string[][]];
  if (!writer?.[0] || startedAt === undefined) throw new Error('the application has no session to the database');
  return { writer: writer[0], startedAt, rows: Number(rows), maxId: Number(maxId) };
}

/** Waits until the application has written `count` more rows than `base` (in `cloud`). */
export async function waitForDbRows(record: TestbedRecord, cloud: string, atLeast: number, timeoutMs = 60_000): Promise<DemoDbView> {
  let view: DemoDbView | undefined;
  await waitFor(`${atLeast} rows written by the application`, async () => {
    view = await demoDbView(record, cloud).catch(() => undefined);
    return (view?.rows ?? 0) >= atLeast;
  }, timeoutMs, 200);
  return view!;
}

/**
 * Starts a client holding one connection to `target`: in the clients' port of `cloud` (or the
 * port named `fromPort`), or in the outside world (the testbed's Internet) when `cloud` is "outside".
 */
export async function startDemoClient(record: TestbedRecord, cloud: string, target: ClientTarget = kvTarget, fromPort = clientPort.name): Promise<DemoClient> {
  const dir = record.options.stateDir;
  const statusFile = path.join(dir, `${target.name}-status.json`);
  const netns = cloud === 'outside' ? record.outside.netns : openLocalCloud(dir, cloud).controlPlane.portNetns(fromPort);
  const pid = await startService({
    name: `demo ${target.name}`,
    argv: ['nsenter', `--net=/run/netns/${netns}`, process.execPath, path.join(__dirname, 'client.js'), target.ip, String(target.port), statusFile, target.protocol],
    logFile: path.join(dir, `${target.name}.log`),
  });
  await registerProcess(dir, `demo ${target.name}`, pid);
  const status = async () => JSON.parse(await readFile(statusFile, 'utf8')) as ClientStatus;
  const client: DemoClient = {
    pid,
    statusFile,
    status,
    async waitForReplies(count, timeoutMs = 30_000) {
      let base: number | undefined;
      let last: ClientStatus | undefined;
      await waitFor(`${count} replies to the demo client`, async () => {
        try {
          last = await status();
        } catch {
          return false; // not written yet
        }
        if (last.closed) throw new Error(`demo client stopped: ${last.error ?? 'closed'}`);
        base ??= last.replies;
        return last.replies >= base + count;
      }, timeoutMs);
      return last!;
    },
  };
  return client;
}
