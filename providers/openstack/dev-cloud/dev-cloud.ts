/**
 * `migravi openstack up|down|status`: a real OpenStack control plane on this machine, from
 * Debian's packages (Keystone, Glance, Placement, Neutron with ML2 and routers, Nova with the
 * fake virt driver, Designate), on MariaDB and RabbitMQ, bound to loopback. Two projects are the
 * two clouds. `up` is idempotent: what runs is kept, the databases survive `down`, and a second
 * `up` takes seconds.
 */
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { isAlive, startService, waitFor } from '../../../lib/processes';
import { writeConfigFiles, type DevCloudSecrets } from './config-files';
import { daemons, type Daemon, type Readiness } from './daemons';
import { bootstrapKeystone, ensureDatabases, ensureMysqlDataDir, syncSchemas, updateDesignatePool } from './databases';
import { setUpCloudResources, setUpIdentity, type DevCloudCredentials } from './cloud-resources';
import { DEV_PROJECTS, devCloudLayout, EXTERNAL_NETWORK, SERVICES, type DevCloudLayout } from './layout';

export interface DevCloudState {
  bind: string;
  processes: Array<{ name: string; pid: number; log: string; startedAt: number }>;
}

export interface DevCloudOptions {
  dir?: string;
  bind?: string;
  log?: (line: string) => void;
}

const secret = () => randomBytes(18).toString('base64url');

function loadOrCreateSecrets(l: DevCloudLayout): DevCloudSecrets {
  if (existsSync(l.secretsFile)) return JSON.parse(readFileSync(l.secretsFile, 'utf8')) as DevCloudSecrets;
  const secrets: DevCloudSecrets = {
    db: Object.fromEntries(SERVICES.map((s) => [s, secret()])) as DevCloudSecrets['db'],
    service: Object.fromEntries(SERVICES.filter((s) => s !== 'keystone').map((s) => [s, secret()])) as DevCloudSecrets['service'],
    admin: secret(),
    projects: Object.fromEntries(DEV_PROJECTS.map((p) => [p, secret()])),
  };
  writeFileSync(l.secretsFile, JSON.stringify(secrets, null, 2), { mode: 0o600 });
  return secrets;
}

export function readDevCloudState(l: DevCloudLayout): DevCloudState | undefined {
  try {
    return JSON.parse(readFileSync(l.stateFile, 'utf8')) as DevCloudState;
  } catch {
    return undefined;
  }
}

function saveState(l: DevCloudLayout, state: DevCloudState): void {
  writeFileSync(l.stateFile, JSON.stringify(state, null, 2));
}

async function answers(ready: Readiness): Promise<boolean> {
  if (ready === 'started') return true;
  if ('tcp' in ready) {
    return new Promise((resolve) => {
      const socket = connect(ready.tcp, '127.0.0.1');
      socket.once('connect', () => socket.end(() => resolve(true)));
      socket.once('error', () => resolve(false));
    });
  }
  try {
    const response = await fetch(ready.http, { headers: { Connection: 'close' }, signal: AbortSignal.timeout(5_000) });
    await response.arrayBuffer();
    return response.status < 500;
  } catch {
    return false;
  }
}

/** Starts the daemon unless the one recorded still runs; resolves once it answers. */
async function ensureDaemon(l: DevCloudLayout, state: DevCloudState, daemon: Daemon, log: (line: string) => void): Promise<void> {
  const recorded = state.processes.find((p) => p.name === daemon.name);
  if (recorded && isAlive(recorded.pid)) return;
  const logFile = path.join(l.logs, `${daemon.name}.log`);
  const started = Date.now();
  const pid = await startService({ name: daemon.name, argv: daemon.argv, logFile, env: { ...process.env, ...daemon.env }, timeoutMs: 5_000 });
  state.processes = [...state.processes.filter((p) => p.name !== daemon.name), { name: daemon.name, pid, log: logFile, startedAt: started }];
  saveState(l, state);
  await waitFor(`${daemon.name} to answer (log: ${logFile})`, async () => {
    if (!isAlive(pid)) throw new Error(`${daemon.name} exited; the end of ${logFile}:\n${readFileSync(logFile, 'utf8').split('\n').slice(-15).join('\n')}`);
    return answers(daemon.ready);
  }, 120_000, 250);
  log(`${daemon.name} answers (${Date.now() - started} ms, pid ${pid})`);
}

async function startTier(l: DevCloudLayout, state: DevCloudState, tier: number, log: (line: string) => void): Promise<void> {
  await Promise.all(daemons(l).filter((d) => d.tier === tier).map((d) => ensureDaemon(l, state, d, log)));
}

export async function devCloudUp(opts: DevCloudOptions = {}): Promise<DevCloudCredentials> {
  const log = opts.log ?? (() => undefined);
  if (process.getuid?.() !== 0) throw new Error('migravi openstack up must run as root (it starts MariaDB, RabbitMQ and the OpenStack services as root)');
  const l = devCloudLayout(opts.dir, opts.bind);
  const running = readDevCloudState(l);
  if (running && running.bind !== l.bind && running.processes.some((p) => isAlive(p.pid))) {
    throw new Error(`the development OpenStack in ${l.dir} runs bound to ${running.bind}, not ${l.bind}: take it down first (migravi openstack down)`);
  }
  for (const dir of [l.dir, l.etc, l.logs, l.data, path.join(l.data, 'rabbitmq')]) mkdirSync(dir, { recursive: true, mode: 0o700 });
  const began = Date.now();
  const step = (what: string, since: number) => log(`${what} (${Date.now() - since} ms)`);
  const secrets = loadOrCreateSecrets(l);
  const state: DevCloudState = { bind: l.bind, processes: running?.processes.filter((p) => isAlive(p.pid)) ?? [] };
  if (existsSync(l.cloudsFile) && daemons(l).every((d) => state.processes.some((p) => p.name === d.name))) {
    // Everything runs already: only checked, nothing restarted.
    await Promise.all(daemons(l).map(async (d) => {
      if (!(await answers(d.ready))) throw new Error(`${d.name} runs but does not answer (log: ${path.join(l.logs, `${d.name}.log`)}): migravi openstack down, then up`);
    }));
    const saved = JSON.parse(readFileSync(l.cloudsFile, 'utf8')) as DevCloudCredentials;
    if (saved.floatingRange === EXTERNAL_NETWORK.floatingRange) {
      log(`development OpenStack already up: every process runs and answers (${Date.now() - began} ms)`);
      return saved;
    }
    // Started by an older release: its cloud resources are brought to this one's (idempotent, seconds).
    const credentials = await setUpCloudResources(l, secrets, log, { computeStartedAt: 0 });
    writeFileSync(l.cloudsFile, JSON.stringify(credentials, null, 2), { mode: 0o600 });
    log(`development OpenStack already up; its resources updated (${Date.now() - began} ms)`);
    return credentials;
  }
  writeConfigFiles(l, secrets);
  let t = Date.now();
  await ensureMysqlDataDir(l);
  await startTier(l, state, 0, log);
  // RabbitMQ takes ~10 s to start: the schemas are synced meanwhile.
  const broker = startTier(l, state, 1, log);
  await ensureDatabases(l, secrets);
  const synced = await syncSchemas(l, secrets);
  step(synced.length ? `schemas synced: ${synced.join(', ')}` : 'schemas current', t);
  t = Date.now();
  await bootstrapKeystone(l, secrets);
  step('keystone bootstrapped', t);
  await startTier(l, state, 2, log);
  t = Date.now();
  await setUpIdentity(l, secrets);
  step('service users, catalog, projects and their users in place', t);
  await broker;
  await startTier(l, state, 3, log);
  t = Date.now();
  await updateDesignatePool(l);
  step('designate pool written', t);
  await startTier(l, state, 4, log);
  t = Date.now();
  const credentials = await setUpCloudResources(l, secrets, log, { computeStartedAt: began });
  step('flavor, image and external network in place', t);
  writeFileSync(l.cloudsFile, JSON.stringify(credentials, null, 2), { mode: 0o600 });
  log(`development OpenStack up in ${((Date.now() - began) / 1000).toFixed(1)} s; credentials in ${l.cloudsFile}`);
  return credentials;
}

/** Stops every process `up` started, each by its recorded PID's process group; the data stays unless `purge`. */
export async function devCloudDown(opts: DevCloudOptions & { purge?: boolean } = {}): Promise<string[]> {
  const l = devCloudLayout(opts.dir, opts.bind);
  const state = readDevCloudState(l);
  const stopped: string[] = [];
  // Reverse order: the services before the broker and the database they use.
  for (const p of [...(state?.processes ?? [])].reverse()) {
    if (!isAlive(p.pid)) continue;
    await stopGroup(p.pid);
    stopped.push(p.name);
    opts.log?.(`${p.name} stopped (pid ${p.pid})`);
  }
  rmSync(l.stateFile, { force: true });
  if (opts.purge) rmSync(l.dir, { recursive: true, force: true });
  return stopped;
}

async function stopGroup(pid: number): Promise<void> {
  const signal = (sig: NodeJS.Signals) => {
    try {
      process.kill(-pid, sig);
    } catch {
      /* the group is gone */
    }
  };
  signal('SIGTERM');
  try {
    await waitFor(`process group ${pid} to exit`, () => !groupAlive(pid), 15_000, 100);
  } catch {
    signal('SIGKILL');
    await waitFor(`process group ${pid} to die`, () => !groupAlive(pid), 5_000, 100);
  }
}

function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

export interface DevCloudStatus {
  dir: string;
  processes: Array<{ name: string; pid?: number; running: boolean; log: string }>;
  credentials?: string;
}

export function devCloudStatus(opts: DevCloudOptions = {}): DevCloudStatus {
  const l = devCloudLayout(opts.dir, opts.bind);
  const state = readDevCloudState(l);
  return {
    dir: l.dir,
    processes: daemons(l).map((d) => {
      const p = state?.processes.find((x) => x.name === d.name);
      return { name: d.name, pid: p?.pid, running: p ? isAlive(p.pid) : false, log: path.join(l.logs, `${d.name}.log`) };
    }),
    credentials: existsSync(l.cloudsFile) ? l.cloudsFile : undefined,
  };
}
