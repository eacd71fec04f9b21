import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';

/** Polls `condition` until it holds; fails with `what` after `timeoutMs`. Waits on a condition, never a fixed sleep. */
export async function waitFor(what: string, condition: () => Promise<boolean> | boolean, timeoutMs = 30_000, intervalMs = 50): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

function isZombie(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.startsWith('Z') ?? false;
  } catch {
    return true;
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !isZombie(pid);
  } catch {
    return false;
  }
}

/** Stops one process we started, by PID: TERM, then KILL if it lingers. */
export async function stopPid(pid: number, timeoutMs = 10_000): Promise<void> {
  if (!isAlive(pid)) return;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  try {
    await waitFor(`process ${pid} to exit`, () => !isAlive(pid), timeoutMs);
  } catch {
    process.kill(pid, 'SIGKILL');
    await waitFor(`process ${pid} to die`, () => !isAlive(pid), 5_000);
  }
}

export async function readPidFile(file: string): Promise<number | undefined> {
  try {
    const pid = Number((await readFile(file, 'utf8')).trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Starts a long-running process in its own session with stdout/stderr appended to a log file
 * (so it may outlive us), and resolves with its PID once `readyLine` appears in the new part of
 * the log; fails with the log's tail if the process dies first.
 */
export async function startService(opts: {
  name: string;
  argv: string[];
  logFile: string;
  readyLine?: RegExp;
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
}): Promise<number> {
  let offset = 0;
  try {
    offset = statSync(opts.logFile).size;
  } catch {
    /* new log */
  }
  const fd = openSync(opts.logFile, 'a');
  const child = spawn(opts.argv[0]!, opts.argv.slice(1), { stdio: ['ignore', fd, fd], detached: true, env: opts.env ?? process.env });
  closeSync(fd);
  let exited: number | null | undefined;
  child.on('exit', (code) => (exited = code));
  child.on('error', () => (exited = -1));
  child.unref();
  const newOutput = () => readFileSync(opts.logFile).subarray(offset).toString();
  try {
    await waitFor(`${opts.name} to be ready`, () => {
      if (exited !== undefined || !child.pid) {
        throw new Error(`${opts.name} exited with code ${exited}: ${opts.argv.join(' ')}\n${newOutput().split('\n').slice(-15).join('\n')}`);
      }
      return opts.readyLine ? opts.readyLine.test(newOutput()) : true;
    }, opts.timeoutMs ?? 60_000);
  } catch (err) {
    if (child.pid) await stopPid(child.pid);
    throw err;
  }
  return child.pid!;
}

/** Durations of consecutive steps, for a log line ("join 2 ms, forward 1 ms, …"). */
export function stepTimes(): { mark(step: string): void; summary(): string } {
  let last = Date.now();
  const parts: string[] = [];
  return {
    mark(step) {
      const now = Date.now();
      parts.push(`${step} ${now - last} ms`);
      last = now;
    },
    summary: () => parts.join(', '),
  };
}
