/**
 * The embedded clouds as a service, for people and for the demo alike: `up` brings up the testbed
 * (or keeps the one that runs, with its VIs), the Temporal dev server with its Web UI, and the
 * supervisor that keeps the orchestrator and every cloud's worker running; `down` stops all of
 * it by PID and removes the clouds; `status` says what runs where.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { criuPath, testbedsDir } from '../../lib/paths';
import { ensureKeyRing, payloadKeysPath } from '../../lib/payload-keys';
import { isAlive, readPidFile, startService, stopPid } from '../../lib/processes';
import { relayTemporalToClouds, startTemporalServer, waitForTemporal } from './embedded-stack';
import { CLOUD_METRICS_PORT, readSupervisorState, type SupervisedProcess } from './supervisor-state';
import { DEFAULT_HOST_LINK, readTestbed, registerProcess, SUPERVISOR, testbedDown, testbedUp, unregisterProcess } from './testbed';

export interface CloudsOptions {
  /** The testbed's id (namespaces, links and state are named after it); the demo's is "migravi". */
  id?: string;
  clouds?: string[];
  wanRateMbit?: number;
  wanGateway?: string;
  hostLink?: string;
  /** How stretched networks cross the WAN (default: inside WireGuard tunnels). */
  stretch?: 'wireguard' | 'plain';
  temporalPort?: number;
  uiPort?: number;
  /** The codec endpoint's port (loopback): the Web UI shows decoded payloads through it. */
  codecPort?: number;
  /** The orchestrator's Prometheus endpoint on this host (each cloud worker's is port CLOUD_METRICS_PORT in its cloud's namespace). */
  metricsPort?: number;
  /** Take down whatever runs under this id and start from empty clouds. */
  fresh?: boolean;
  log?: (line: string) => void;
}

export interface CloudsStatus {
  id: string;
  up: boolean;
  clouds: Array<{ name: string; publicIp: string; floatingRange: string; dns?: string }>;
  temporal?: { address: string; ui: string; pid?: number; running: boolean; codecEndpoint?: string; codecPid?: number };
  /** Where to scrape: the orchestrator's endpoint, and how to reach each cloud worker's (inside its namespace). */
  metrics?: { orchestrator: string; clouds: Record<string, string> };
  supervisor?: { pid: number; running: boolean };
  processes: Array<SupervisedProcess & { running: boolean }>;
  logDir?: string;
}

interface ServiceRecord {
  id: string;
  temporal: { port: number; uiPort: number; dir: string; codecPort?: number };
  metricsPort: number;
  supervisorPid: number;
  logDir: string;
}

const DEFAULTS = { id: 'migravi', clouds: ['cloud-a', 'cloud-b'], wanRateMbit: 1000, wanGateway: '203.0.113.1', hostLink: DEFAULT_HOST_LINK, temporalPort: 7233, uiPort: 8233, codecPort: 8234, metricsPort: 9464 };

const stateDirOf = (id: string) => path.join(testbedsDir, id);
const serviceFile = (id: string) => path.join(stateDirOf(id), 'service.json');
/** The demo's Temporal directory is kept where earlier releases put it (its Web UI keeps their runs). */
const temporalDirOf = (id: string) => (id === DEFAULTS.id ? '/var/lib/migravi/temporal' : `/var/lib/migravi/temporal-${id}`);

async function readService(id: string): Promise<ServiceRecord | undefined> {
  try {
    return JSON.parse(await readFile(serviceFile(id), 'utf8')) as ServiceRecord;
  } catch {
    return undefined;
  }
}

export async function cloudsUp(options: CloudsOptions = {}): Promise<CloudsStatus> {
  if (process.getuid?.() !== 0) throw new Error('the embedded clouds need root (network namespaces, runc, CRIU): run migravi clouds up as root');
  const opts = { ...DEFAULTS, ...options };
  const log = options.log ?? (() => undefined);
  const stateDir = stateDirOf(opts.id);
  const running = await readService(opts.id);
  if (!opts.fresh && running && isAlive(running.supervisorPid)) {
    log(`the clouds of ${opts.id} are up already (supervisor pid ${running.supervisorPid})`);
    return cloudsStatus(opts.id);
  }
  const record = await readTestbed(stateDir);
  // Intact: every cloud's namespace is there, and so is every WAN tunnel its stretches cross (a
  // testbed made before the tunnels, or whose tunnel process died, stretches nothing securely).
  const tunnelsUp = (r: NonNullable<typeof record>) => r.options.stretch === 'plain'
    || (r.clouds.every((c) => c.wanTunnels) && r.processes.filter((p) => p.name.startsWith('wireguard-go ')).every((p) => isAlive(p.pid)));
  const intact = (record?.clouds.every((c) => existsSync(`/run/netns/${c.netns}`)) ?? false) && !!record && tunnelsUp(record);
  if (opts.fresh || !intact || !record) {
    await testbedDown(stateDir, opts.id, (line) => log(`cleanup of an earlier run: ${line}`));
    await testbedUp({ id: opts.id, stateDir, clouds: opts.clouds, wanGateway: opts.wanGateway, wanPrefixLength: 25, wanRateMbit: opts.wanRateMbit, criuPath, hostLink: opts.hostLink, stretch: opts.stretch }, log);
  } else {
    log(`keeping the clouds of ${opts.id} as they are (${record.clouds.map((c) => c.name).join(', ')}), with their VIs`);
  }
  if (!opts.fresh && intact && record) await stopOrphanedWorkers(stateDir, record.processes);
  // Every payload the workers and clients send is encrypted with this installation's key ring.
  const keys = await ensureKeyRing();
  if (keys.created) log(`created the payload key ring ${payloadKeysPath()} (key ${keys.ring.current})`);
  const temporalDir = temporalDirOf(opts.id);
  await ensureCodecServer(opts.codecPort, opts.uiPort, temporalDir, log);
  await ensureTemporal(opts.temporalPort, opts.uiPort, temporalDir, opts.id === DEFAULTS.id ? 'demo.sqlite' : 'temporal.sqlite', log, `http://127.0.0.1:${opts.codecPort}`);
  // Logs outlive the clouds, so a failed run can be read after the teardown.
  const logDir = path.join('/var/lib/migravi/logs', `clouds-${opts.id}-${new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '')}`);
  await mkdir(logDir, { recursive: true });
  // Temporal listens on the loopback: the clouds' workers reach it through the host link only.
  await relayTemporalToClouds((await readTestbed(stateDir))!, opts.temporalPort, logDir);
  const supervisorPid = await startService({
    name: 'the workers\' supervisor',
    argv: [process.execPath, path.join(__dirname, 'supervisor.js'), '--state-dir', stateDir, '--temporal-port', String(opts.temporalPort), '--metrics-port', String(opts.metricsPort), '--log-dir', logDir],
    logFile: path.join(logDir, 'supervisor.log'),
    readyLine: /supervisor ready/,
    timeoutMs: 180_000,
  });
  await registerProcess(stateDir, SUPERVISOR, supervisorPid);
  const service: ServiceRecord = { id: opts.id, temporal: { port: opts.temporalPort, uiPort: opts.uiPort, dir: temporalDir, codecPort: opts.codecPort }, metricsPort: opts.metricsPort, supervisorPid, logDir };
  await writeFile(serviceFile(opts.id), JSON.stringify(service, null, 2));
  log(`workers up under supervisor pid ${supervisorPid}; logs in ${logDir}`);
  return cloudsStatus(opts.id);
}

/** Workers (and a supervisor) an earlier supervisor left when it was killed: stopped by PID before new ones start. */
async function stopOrphanedWorkers(stateDir: string, processes: Array<{ name: string; pid: number }>): Promise<void> {
  for (const p of processes.filter((p) => p.name === SUPERVISOR || p.name.endsWith('worker') || p.name.startsWith('cloud worker '))) {
    await stopPid(p.pid);
    await unregisterProcess(stateDir, p.pid);
  }
}

/** Reuses this id's Temporal server if it still runs (its Web UI keeps earlier runs), else starts it. */
/** The Web UI's codec endpoint (loopback only: whoever reaches it can decrypt), kept running like the server. */
async function ensureCodecServer(port: number, uiPort: number, dir: string, log: (line: string) => void): Promise<void> {
  await mkdir(dir, { recursive: true });
  const pidFile = path.join(dir, 'codec-server.pid');
  const pid = await readPidFile(pidFile);
  if (pid && isAlive(pid)) return;
  const cli = path.join(__dirname, '..', '..', 'client', 'cli.js');
  const started = await startService({
    name: 'codec server',
    argv: [process.execPath, cli, 'codec-server', '--port', String(port), '--ui-origin', `http://localhost:${uiPort}`, `http://127.0.0.1:${uiPort}`],
    logFile: path.join(dir, 'codec-server.log'),
    readyLine: /codec server ready/,
  });
  await writeFile(pidFile, String(started));
  log(`codec server started (pid ${started}) on http://127.0.0.1:${port}: the Web UI shows decoded payloads`);
}

async function ensureTemporal(port: number, uiPort: number, dir: string, dbName: string, log: (line: string) => void, codecEndpoint?: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  const pidFile = path.join(dir, 'server.pid');
  const pid = await readPidFile(pidFile);
  if (pid && isAlive(pid)) {
    await waitForTemporal(`127.0.0.1:${port}`, 10_000);
    log(`Temporal server already running (pid ${pid})`);
    return;
  }
  const started = await startTemporalServer({ port, uiPort, dbFile: path.join(dir, dbName), logFile: path.join(dir, 'server.log'), ...(codecEndpoint ? { codecEndpoint } : {}) });
  await writeFile(pidFile, String(started));
  log(`Temporal dev server started (pid ${started}) on 127.0.0.1:${port}, Web UI http://localhost:${uiPort}, SQLite in ${dir}`);
}

/** Stops the workers, removes the clouds (and their VIs), and stops the Temporal server unless asked to keep it (its Web UI). */
export async function cloudsDown(options: { id?: string; keepTemporal?: boolean; log?: (line: string) => void } = {}): Promise<void> {
  const id = options.id ?? DEFAULTS.id;
  const log = options.log ?? (() => undefined);
  const service = await readService(id);
  if (service && isAlive(service.supervisorPid)) {
    await stopPid(service.supervisorPid, 60_000); // it stops its workers first
    log(`workers and their supervisor stopped`);
  }
  await testbedDown(stateDirOf(id), id, log);
  await rm(serviceFile(id), { force: true });
  const temporalDir = service?.temporal.dir ?? temporalDirOf(id);
  if (options.keepTemporal) return;
  const pid = await readPidFile(path.join(temporalDir, 'server.pid'));
  if (pid && isAlive(pid)) {
    await stopPid(pid);
    log(`Temporal server stopped (pid ${pid}); its history stays in ${temporalDir}`);
  }
  await rm(path.join(temporalDir, 'server.pid'), { force: true });
  const codecPid = await readPidFile(path.join(temporalDir, 'codec-server.pid'));
  if (codecPid && isAlive(codecPid)) {
    await stopPid(codecPid);
    log(`codec server stopped (pid ${codecPid})`);
  }
  await rm(path.join(temporalDir, 'codec-server.pid'), { force: true });
}

export async function cloudsStatus(id = DEFAULTS.id): Promise<CloudsStatus> {
  const stateDir = stateDirOf(id);
  const record = await readTestbed(stateDir);
  const service = await readService(id);
  const supervised = readSupervisorState(stateDir);
  const temporalPid = service ? await readPidFile(path.join(service.temporal.dir, 'server.pid')) : undefined;
  const codecPid = service ? await readPidFile(path.join(service.temporal.dir, 'codec-server.pid')) : undefined;
  const supervisor = service ? { pid: service.supervisorPid, running: isAlive(service.supervisorPid) } : undefined;
  const processes = (supervised?.processes ?? []).map((p) => ({ ...p, running: p.pid !== undefined && isAlive(p.pid) }));
  return {
    id,
    up: !!record && !!supervisor?.running && processes.length > 0 && processes.every((p) => p.running),
    clouds: (record?.clouds ?? []).map((c) => ({ name: c.name, publicIp: c.publicIp, floatingRange: c.floatingRange, ...(c.dns ? { dns: c.dns.server } : {}) })),
    ...(service
      ? { temporal: { address: `127.0.0.1:${service.temporal.port}`, ui: `http://localhost:${service.temporal.uiPort}`, ...(temporalPid ? { pid: temporalPid } : {}), running: !!temporalPid && isAlive(temporalPid), ...(service.temporal.codecPort ? { codecEndpoint: `http://127.0.0.1:${service.temporal.codecPort}` } : {}), ...(codecPid ? { codecPid } : {}) } }
      : {}),
    ...(service && record
      ? { metrics: { orchestrator: `http://127.0.0.1:${service.metricsPort}/metrics`, clouds: Object.fromEntries(record.clouds.map((c) => [c.name, `ip netns exec ${c.netns} curl -s http://127.0.0.1:${CLOUD_METRICS_PORT}/metrics`])) } }
      : {}),
    ...(supervisor ? { supervisor } : {}),
    processes,
    ...(service ? { logDir: service.logDir } : {}),
  };
}
