/**
 * The supervisor of the embedded clouds' workers (`migravi clouds up` starts it, detached): it
 * starts the orchestrator worker and one worker per cloud, inside its cloud, and starts again any
 * that dies — at once after a healthy run (a minute or more), else after a pause that doubles
 * from 1 s to 30 s while it keeps dying — as systemd would. Each worker logs to its own file and has a pid file; what runs is in supervisor.json
 * (read by `migravi clouds status`). SIGTERM stops every worker, then the supervisor.
 *   node dist/providers/local/supervisor.js --state-dir DIR --temporal-port 7233 --metrics-port 9464 --log-dir DIR
 */
import { mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { isAlive, startService, stopPid } from '../../lib/processes';
import { CLOUD_WORKER_READY, cloudWorkerArgv, ORCHESTRATOR_READY, orchestratorArgv } from './embedded-stack';
import { CLOUD_METRICS_PORT, supervisorStateFile, type SupervisedProcess, type SupervisorState } from './supervisor-state';
import { readTestbed, registerProcess, unregisterProcess, type TestbedRecord } from './testbed';

/** A worker that ran this long before it died is started again at once (it was not crash-looping). */
const HEALTHY_MS = 60_000;
const MAX_BACKOFF_MS = 30_000;
const CHECK_MS = 500;

interface Worker extends SupervisedProcess {
  argv: string[];
  ready: RegExp;
  nextStartAt: number;
  backoffMs: number;
}

function workersOf(record: TestbedRecord, temporalPort: number, metricsPort: number, logDir: string, pidDir: string): Worker[] {
  const worker = (name: string, file: string, argv: string[], ready: RegExp): Worker => ({
    name, argv, ready, restarts: 0, nextStartAt: 0, backoffMs: 0, log: path.join(logDir, `${file}.log`), pidFile: path.join(pidDir, `${file}.pid`),
  });
  return [
    worker('orchestrator worker', 'orchestrator', orchestratorArgv(`127.0.0.1:${temporalPort}`, `127.0.0.1:${metricsPort}`), ORCHESTRATOR_READY),
    ...record.clouds.map((c) => worker(`cloud worker ${c.name}`, `worker-${c.name}`, cloudWorkerArgv(record, c.name, temporalPort, `0.0.0.0:${CLOUD_METRICS_PORT}`), CLOUD_WORKER_READY)),
  ];
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { 'state-dir': { type: 'string' }, 'temporal-port': { type: 'string' }, 'metrics-port': { type: 'string' }, 'log-dir': { type: 'string' } } });
  const stateDir = values['state-dir'];
  const logDir = values['log-dir'];
  const temporalPort = Number(values['temporal-port']);
  const metricsPort = Number(values['metrics-port']);
  if (!stateDir || !logDir || !Number.isInteger(temporalPort) || !Number.isInteger(metricsPort)) throw new Error('usage: supervisor --state-dir DIR --temporal-port PORT --metrics-port PORT --log-dir DIR');
  const record = await readTestbed(stateDir);
  if (!record) throw new Error(`no testbed in ${stateDir}: bring the clouds up first`);
  const pidDir = path.join(stateDir, 'pids');
  mkdirSync(pidDir, { recursive: true });
  mkdirSync(logDir, { recursive: true });
  const workers = workersOf(record, temporalPort, metricsPort, logDir, pidDir);
  const save = () => {
    const state: SupervisorState = { pid: process.pid, temporalPort, processes: workers.map(({ name, pid, restarts, startedAt, log, pidFile, last }) => ({ name, pid, restarts, startedAt, log, pidFile, last })) };
    // Written aside and renamed: `clouds status` reads it at any moment and must never see half a file.
    const file = supervisorStateFile(stateDir);
    writeFileSync(`${file}.tmp`, JSON.stringify(state, null, 2));
    renameSync(`${file}.tmp`, file);
  };
  let stopping = false;
  // What the supervisor is doing now (a start may be under way): a stop waits for it, so no worker starts behind it.
  let busy: Promise<unknown> = Promise.resolve();
  const stop = async () => {
    stopping = true;
    await busy.catch(() => undefined);
    for (const w of workers) if (w.pid) await stopWorker(stateDir, w);
    save();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop());
  process.on('SIGINT', () => void stop());

  // The first start: all at once; the supervisor is ready when every worker is.
  busy = Promise.all(workers.map((w) => start(w)));
  await busy;
  for (const w of workers) if (w.pid) await registerProcess(stateDir, w.name, w.pid);
  save();
  console.log(`supervisor ready: ${workers.map((w) => `${w.name} ${w.pid ? `pid ${w.pid}` : `not started (${w.last})`}`).join(', ')}`);
  while (!stopping) {
    await new Promise((resolve) => setTimeout(resolve, CHECK_MS));
    if (stopping) break;
    busy = superviseOnce(stateDir, workers, () => stopping).then(save);
    await busy;
  }
}

/** One round: a worker that died is noted, and started again when its pause is over. */
async function superviseOnce(stateDir: string, workers: Worker[], stopping: () => boolean): Promise<void> {
  for (const w of workers) {
    if (w.pid && !isAlive(w.pid)) await noteDeath(stateDir, w);
    if (!w.pid && Date.now() >= w.nextStartAt && !stopping() && (await start(w))) {
      w.restarts++;
      await registerProcess(stateDir, w.name, w.pid!);
    }
  }
}

/** Starts a worker and waits until it is ready; a failure is recorded and the next try backed off. */
async function start(w: Worker): Promise<boolean> {
  try {
    w.pid = await startService({ name: w.name, argv: w.argv, logFile: w.log, readyLine: w.ready, timeoutMs: 120_000 });
    w.startedAt = Date.now();
    writeFileSync(w.pidFile, String(w.pid));
    console.log(`${new Date().toISOString()} started ${w.name}: pid ${w.pid}`);
    return true;
  } catch (err) {
    w.last = `start failed: ${(err as Error).message.split('\n')[0]}`;
    w.backoffMs = Math.min(MAX_BACKOFF_MS, Math.max(1000, w.backoffMs * 2));
    w.nextStartAt = Date.now() + w.backoffMs;
    console.log(`${new Date().toISOString()} ${w.name}: ${w.last}; next try in ${w.backoffMs / 1000} s`);
    return false;
  }
}

/** A worker died: it is started again at once if it had run a while, else after a growing pause. */
async function noteDeath(stateDir: string, w: Worker): Promise<void> {
  const ranMs = Date.now() - (w.startedAt ?? Date.now());
  w.last = `pid ${w.pid} died after ${Math.round(ranMs / 1000)} s`;
  console.log(`${new Date().toISOString()} ${w.name}: ${w.last}`);
  await unregisterProcess(stateDir, w.pid!);
  rmSync(w.pidFile, { force: true });
  w.pid = undefined;
  w.backoffMs = ranMs >= HEALTHY_MS ? 0 : Math.min(MAX_BACKOFF_MS, Math.max(1000, w.backoffMs * 2));
  w.nextStartAt = Date.now() + w.backoffMs;
}

async function stopWorker(stateDir: string, w: Worker): Promise<void> {
  await stopPid(w.pid!);
  await unregisterProcess(stateDir, w.pid!);
  rmSync(w.pidFile, { force: true });
  w.last = `stopped (pid ${w.pid})`;
  w.pid = undefined;
}

main().catch((err: unknown) => {
  console.error(`supervisor: ${err instanceof Error ? err.stack : String(err)}`);
  process.exit(1);
});
