/**
 * Starts the processes of an embedded MigraVI installation on this machine: the Temporal dev
 * server, the orchestrator worker, and one worker per cloud inside that cloud's namespace.
 * Used by the demo and the end-to-end tests alike.
 */
import path from 'node:path';
import { Connection } from '@temporalio/client';
import { temporalCliPath } from '../../lib/paths';
import { isAlive, startService, waitFor } from '../../lib/processes';
import { RELAY_READY } from '../../lib/tcp-relay';
import { ensureCertificateAuthority, issueServerCertificate, TEMPORAL_SERVER_NAME, tlsDirPath } from '../../lib/temporal-tls';
import { searchAttributeFlags } from '../../lib/search-attributes';
import { cloudConfigPath } from './cloud-config';
import { readTestbed, registerProcess, type TestbedRecord } from './testbed';

export interface TemporalServerOptions {
  port: number;
  uiPort: number;
  dbFile: string;
  logFile: string;
  /** Without the Web UI (tests). */
  headless?: boolean;
  /** The codec endpoint the Web UI decodes payloads through (client/codec-server.ts). */
  codecEndpoint?: string;
}

/** Waits until a Temporal frontend answers at `address`. */
export async function waitForTemporal(address: string, timeoutMs = 60_000): Promise<void> {
  await waitFor(`Temporal at ${address}`, async () => {
    try {
      const connection = await Connection.connect({ address, connectTimeout: 1_000 });
      try {
        await connection.workflowService.getSystemInfo({});
        return true;
      } finally {
        await connection.close();
      }
    } catch {
      return false;
    }
  }, timeoutMs, 250);
}

/**
 * The Temporal CLI's dev server (real server, SQLite persistence, Web UI). It has no TLS and no
 * authentication: it listens on the loopback only, and the cloud workers reach it through a relay
 * on the host link (relayTemporalToClouds), never from the host's other networks.
 */
export async function startTemporalServer(opts: TemporalServerOptions): Promise<number> {
  // Another server on the port would answer our readiness check while ours exits: refuse instead.
  const busy = await waitForTemporal(`127.0.0.1:${opts.port}`, 500).then(() => true, () => false);
  if (busy) throw new Error(`a Temporal server already answers on port ${opts.port}: stop it first (it is not ours to reuse)`);
  const argv = [
    temporalCliPath, 'server', 'start-dev',
    '--ip', '127.0.0.1',
    '--port', String(opts.port),
    '--ui-port', String(opts.uiPort),
    '--db-filename', opts.dbFile,
    '--log-level', 'warn',
    '--ui-disable-news-fetch',
    // The dev server has one history shard, whose transfer-task reader (the hand-off of every
    // activity task and workflow task to matching) is rate-limited to 20 reads a second with a
    // burst of 20: a migration's chain of steps used the burst up and then waited ~50 ms per
    // hand-off (measured: 13 ms per activity round trip, then 50 ms flat; 12–14 ms with 200).
    '--dynamic-config-value', 'history.transferProcessorMaxPollRPS=200',
    // What the Web UI's list filters migrations by (VI, clouds, phase, state).
    ...searchAttributeFlags(),
    ...(opts.headless ? ['--headless'] : []),
    ...(opts.codecEndpoint && !opts.headless ? ['--ui-codec-endpoint', opts.codecEndpoint] : []),
  ];
  const pid = await startService({ name: 'Temporal dev server', argv, logFile: opts.logFile });
  await waitForTemporal(`127.0.0.1:${opts.port}`);
  return pid;
}

export const TEMPORAL_RELAY = 'Temporal relay';

/**
 * Lets the testbed's clouds reach the Temporal frontend on this host's loopback: a relay on the
 * host's end of the host link (the only host address a cloud can reach), recorded with the
 * testbed and stopped with it by PID. Idempotent: a running relay is kept.
 * `serverTls`: the server itself requires mutual TLS (lib/temporal-production.ts), so the relay
 * forwards the workers' TLS end to end instead of terminating it.
 */
export async function relayTemporalToClouds(record: TestbedRecord, temporalPort: number, logDir: string, opts: { serverTls?: boolean } = {}): Promise<void> {
  const running = (await readTestbed(record.options.stateDir))?.processes.find((p) => p.name === TEMPORAL_RELAY);
  if (running && isAlive(running.pid)) return;
  // The host link is reachable from the testbed's WAN: only MigraVI's workers, by certificate, get through.
  await ensureCertificateAuthority();
  const server = opts.serverTls ? undefined : await issueServerCertificate(path.join(record.options.stateDir, 'temporal-relay'), 'relay', [record.hostAddress]);
  let pid: number;
  try {
    pid = await startService({
      name: TEMPORAL_RELAY,
      argv: [process.execPath, path.join(__dirname, '..', '..', 'lib', 'tcp-relay.js'), '--listen', record.hostAddress, '--ports', String(temporalPort), '--to', '127.0.0.1',
        ...(server ? ['--tls-cert', server.cert, '--tls-key', server.key, '--tls-ca', server.ca] : [])],
      logFile: path.join(logDir, 'temporal-relay.log'),
      readyLine: RELAY_READY,
    });
  } catch (err) {
    // A server of an earlier release, still running, listens on every address, in plaintext: the
    // workers, which now insist on mutual TLS, cannot use it.
    if (await waitForTemporal(`${record.hostAddress}:${temporalPort}`, 1_000).then(() => true, () => false)) {
      throw new Error(`a Temporal server listens on ${record.hostAddress}:${temporalPort} in plaintext (an earlier release's, on every address): stop it (migravi clouds down) and start again`);
    }
    throw err;
  }
  await registerProcess(record.options.stateDir, TEMPORAL_RELAY, pid);
}

/** How the orchestrator worker is started (on the host: it reaches Temporal on the loopback; `tls`: with these TLS arguments, cloudWorkerTlsArgs). */
export function orchestratorArgv(temporalAddress: string, metrics?: string, tls: string[] = []): string[] {
  return [process.execPath, path.join(__dirname, '..', '..', 'workers', 'orchestrator.js'), '--temporal', temporalAddress, ...tls, ...(metrics ? ['--metrics', metrics] : [])];
}

/** How a cloud's worker is started: inside the cloud's edge namespace, reaching Temporal across the WAN. */
export function cloudWorkerArgv(record: TestbedRecord, cloud: string, temporalPort: number, metrics?: string): string[] {
  const config = record.clouds.find((c) => c.name === cloud);
  if (!config) throw new Error(`no cloud ${cloud} in testbed ${record.options.id}`);
  return [
    'nsenter', `--net=/run/netns/${config.netns}`,
    process.execPath, path.join(__dirname, '..', '..', 'workers', 'cloud-worker.js'),
    '--config', record.cloudConfigs?.[cloud] ?? cloudConfigPath(record.options.stateDir, cloud),
    '--temporal', `${record.hostAddress}:${temporalPort}`,
    ...cloudWorkerTlsArgs(),
    ...(metrics ? ['--metrics', metrics] : []),
  ];
}

/** A cloud worker reaches Temporal through the relay's mutual TLS, with MigraVI's client certificate. */
export function cloudWorkerTlsArgs(dir = tlsDirPath()): string[] {
  return ['--temporal-tls-ca', path.join(dir, 'ca.pem'), '--temporal-tls-cert', path.join(dir, 'client.pem'), '--temporal-tls-key', path.join(dir, 'client.key'), '--temporal-tls-server-name', TEMPORAL_SERVER_NAME];
}

/** What a started worker prints once it polls its task queue. */
export const ORCHESTRATOR_READY = /orchestrator worker ready/;
export const CLOUD_WORKER_READY = /cloud worker ready/;

export async function startOrchestratorWorker(record: TestbedRecord, temporalAddress: string, logFile: string, env?: NodeJS.ProcessEnv, tls?: string[]): Promise<number> {
  const pid = await startService({ name: 'orchestrator worker', argv: orchestratorArgv(temporalAddress, undefined, tls), logFile, env, readyLine: ORCHESTRATOR_READY, timeoutMs: 120_000 });
  await registerProcess(record.options.stateDir, 'orchestrator worker', pid);
  return pid;
}

/** One worker per cloud, started inside the cloud's edge namespace: it reaches Temporal across the WAN. */
export async function startCloudWorkers(
  record: TestbedRecord,
  temporalPort: number,
  logDir: string,
  only?: string[],
  env?: NodeJS.ProcessEnv,
): Promise<Record<string, number>> {
  const pids: Record<string, number> = {};
  await Promise.all(
    record.clouds.filter((cloud) => !only || only.includes(cloud.name)).map(async (cloud) => {
      pids[cloud.name] = await startService({
        name: `cloud worker ${cloud.name}`,
        argv: cloudWorkerArgv(record, cloud.name, temporalPort),
        logFile: path.join(logDir, `worker-${cloud.name}.log`),
        readyLine: CLOUD_WORKER_READY,
        env,
      });
    }),
  );
  for (const [cloud, pid] of Object.entries(pids)) await registerProcess(record.options.stateDir, `cloud worker ${cloud}`, pid);
  return pids;
}
