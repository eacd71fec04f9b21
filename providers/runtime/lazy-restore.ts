/**
 * Post-copy with CRIU, made safe (docs/notes/postcopy-lab/RESULT.md has the measurements behind
 * each choice):
 * - Source (lazy-dump.ts): the processes are held frozen by their dump until their complete
 *   image is written from them; pages are served from them, then from that image, which a
 *   stateless `criu page-server --lazy-pages -D IMAGE` can serve again at will.
 * - Destination: `criu lazy-pages` fetches them on demand and in the background; a guard
 *   (scripts/uffd-guard.c) holds duplicates of the restored processes' userfaultfds, so that if
 *   the daemon or its page source is lost the processes stall on a missing page instead of
 *   reading zeros, and the worker copies the missing pages in itself.
 * - The window ends when the kernel shows every lazy page present (/proc/PID/pagemap), not when
 *   CRIU says so.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, openSync, closeSync } from 'node:fs';
import { mkdir, readFile, readdir, readlink, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { isAlive, readPidFile, stopPid, waitFor } from '../../lib/processes';
import { depsDir } from '../../lib/paths';
import { imageTasks, missingLazyRuns, PAGE_SIZE, type PageServerClient, type TaskPages } from './criu-pages';

const GUARD_PATH = path.join(depsDir, 'bin', 'migravi-uffd-guard');
/** Keeps the daemon from spinning on a core while its requests cross the link (scripts/lazy-pages-epoll-shim.c). */
const EPOLL_SHIM_PATH = path.join(depsDir, 'lib', 'lazy-pages-epoll-shim.so');
/** Unix socket paths are limited to 108 bytes: guards listen under a short directory. */
const GUARD_SOCKETS = '/run/migravi-uffd-guard';
/** Pages fetched per page-server request when the worker fills pages itself. */
const FILL_PAGES = 256;

export type LazyDaemonState = 'running' | 'completed' | 'failed';

export interface FillResult {
  copied: number;
  existed: number;
  gone: number;
}

/** Files of one lazy restore, next to its image (CRIU's work directory). */
function files(imageDir: string) {
  const work = `${imageDir}.work`;
  const id = createHash('sha256').update(imageDir).digest('hex').slice(0, 20);
  return {
    work,
    daemonLog: path.join(work, 'lazy-pages.log'),
    daemonSocket: path.join(work, 'lazy-pages.socket'),
    wrapperPid: path.join(work, 'lazy-pages.wrapper.pid'),
    daemonPid: path.join(work, 'lazy-pages.pid'),
    daemonExit: path.join(work, 'lazy-pages.exit'),
    guardPid: path.join(work, 'uffd-guard.pid'),
    guardLog: path.join(work, 'uffd-guard.log'),
    guardSocket: path.join(GUARD_SOCKETS, `${id}.sock`),
    pageServerPid: path.join(work, 'page-server.pid'),
    pageServerLog: path.join(work, 'page-server.log'),
  };
}

/** Starts a process in its own session that outlives this worker; its output goes to `log`. */
export function spawnDetached(argv: string[], log: string): ChildProcess {
  const fd = openSync(log, 'a');
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', fd, fd], detached: true });
  closeSync(fd);
  child.on('error', () => undefined);
  child.unref();
  if (!child.pid) throw new Error(`could not start ${argv[0]}`);
  return child;
}

/** Whether a socket listens on 127.0.0.1:port (or any address's) in this network namespace (the kernel's table, without connecting). */
export async function listening(port: number): Promise<boolean> {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  const table = await readFile('/proc/net/tcp', 'utf8');
  return table.split('\n').some((line) => {
    const cols = line.trim().split(/\s+/);
    return (cols[1] === `0100007F:${hex}` || cols[1] === `00000000:${hex}`) && cols[3] === '0A';
  });
}

export async function tail(file: string, lines = 12): Promise<string> {
  return (await readFile(file, 'utf8').catch(() => '')).trim().split('\n').slice(-lines).join('\n');
}

// ---------------------------------------------------------------------------------------------
// Source: the page server.

/** Serves the lazy pages of a complete image on 127.0.0.1:port; nothing to do if it already does. */
export async function servePages(criuPath: string, imageDir: string, port: number, awaitListening = true): Promise<void> {
  const f = files(imageDir);
  const running = await readPidFile(f.pageServerPid);
  if (running && isAlive(running)) return;
  await mkdir(f.work, { recursive: true });
  const logName = `page-server.${Date.now()}.log`;
  const pid = spawnDetached([criuPath, 'page-server', '--lazy-pages', '-D', imageDir, '--address', '127.0.0.1', '--port', String(port), '-o', path.join(f.work, logName), '-v2'], f.pageServerLog).pid!;
  await writeFile(f.pageServerPid, String(pid));
  if (!awaitListening) return;
  // It loads the image into pipes (page cache, no copy: ~40 ms for 1 GiB), then listens.
  await waitFor('the page server to listen', async () => {
    if (!isAlive(pid)) throw new Error(`criu page-server exited before listening:\n${await tail(path.join(f.work, logName))}`);
    return listening(port);
  }, 30_000, 5);
}

export async function stopServingPages(imageDir: string): Promise<void> {
  const pid = await readPidFile(files(imageDir).pageServerPid);
  if (pid) await stopPid(pid, 2_000);
}

// ---------------------------------------------------------------------------------------------
// Destination: the lazy-pages daemon and the guard.

/**
 * Starts the lazy-pages daemon (fetching from 127.0.0.1:pageServerPort, a forward to the
 * source's page server) and the guard; the caller then runs `runc restore --lazy-pages` with the
 * same work directory. The daemon's exit status is kept in a file: the worker may die first.
 */
export async function startLazyPages(criuPath: string, imageDir: string, pageServerPort: number): Promise<void> {
  const f = files(imageDir);
  await mkdir(f.work, { recursive: true });
  await mkdir(GUARD_SOCKETS, { recursive: true, mode: 0o700 });
  await rm(f.daemonExit, { force: true });
  await rm(f.daemonSocket, { force: true });
  // Its debug log names which userfaultfd serves which process (needed to fill pages after a
  // loss), but at that level a misbehaving daemon can write gigabytes: only the lines worth
  // keeping pass a filter on the way to the file.
  const fifo = path.join(f.work, 'lazy-pages.fifo');
  await rm(fifo, { force: true });
  if (!existsSync(EPOLL_SHIM_PATH)) throw new Error(`${EPOLL_SHIM_PATH} is missing: run scripts/setup.sh`);
  const daemon = [`LD_PRELOAD=${EPOLL_SHIM_PATH}`, '"$@"', 'lazy-pages', '--page-server', '--address', '127.0.0.1', '--port', String(pageServerPort), '-D', imageDir, '-W', f.work, '-o', fifo, '-v4'];
  const keep = "grep --line-buffered -E 'Received PID|Error|Warn|UFFD transferred|EXIT|Can.t connect'";
  // The shell stays as the daemon's parent to write its exit status when it ends.
  const script = `mkfifo ${fifo} && { ${keep} < ${fifo} > ${f.daemonLog} & } && ${daemon.join(' ')}; echo $? > ${f.daemonExit}`;
  const wrapper = spawnDetached(['sh', '-c', script, 'lazy-pages', criuPath], path.join(f.work, 'lazy-pages.out')).pid!;
  await writeFile(f.wrapperPid, String(wrapper));
  await waitFor('the lazy-pages daemon', async () => {
    if (existsSync(f.daemonExit)) throw new Error(`criu lazy-pages exited early:\n${await tail(f.daemonLog)}`);
    return existsSync(f.daemonSocket);
  }, 30_000, 2);
  const children = (await readFile(`/proc/${wrapper}/task/${wrapper}/children`, 'utf8').catch(() => '')).trim().split(/\s+/).filter(Boolean);
  const daemons: string[] = [];
  for (const child of children) {
    if ((await readFile(`/proc/${child}/cmdline`, 'utf8').catch(() => '')).split('\0').includes('lazy-pages')) daemons.push(child);
  }
  if (daemons.length !== 1) throw new Error(`cannot find the lazy-pages daemon under its shell ${wrapper} (children: ${children.join(' ') || 'none'})`);
  const daemonPid = Number(daemons[0]);
  await writeFile(f.daemonPid, String(daemonPid));
  const guard = spawnDetached([GUARD_PATH, String(daemonPid), f.guardSocket], f.guardLog).pid!;
  await writeFile(f.guardPid, String(guard));
  await waitFor('the userfaultfd guard', async () => {
    if (!isAlive(guard)) throw new Error(`the userfaultfd guard exited:\n${await tail(f.guardLog)}`);
    return existsSync(f.guardSocket);
  }, 10_000, 2);
}

export async function lazyDaemonState(imageDir: string): Promise<LazyDaemonState> {
  const f = files(imageDir);
  const exit = await readFile(f.daemonExit, 'utf8').catch(() => undefined);
  if (exit !== undefined) return exit.trim() === '0' ? 'completed' : 'failed';
  const wrapper = await readPidFile(f.wrapperPid);
  return wrapper && isAlive(wrapper) ? 'running' : 'failed';
}

/** Whether the guard still runs (it holds the userfaultfds until released). */
export async function guardAlive(imageDir: string): Promise<boolean> {
  const pid = await readPidFile(files(imageDir).guardPid);
  return pid !== undefined && isAlive(pid);
}

/** One request to the guard over its socket. */
async function askGuard(imageDir: string, line: string, data?: Buffer): Promise<string> {
  const socket = net.connect(files(imageDir).guardSocket);
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    socket.write(`${line}\n`);
    if (data) socket.write(data);
    const answer = await new Promise<string>((resolve, reject) => {
      let text = '';
      socket.on('data', (chunk: Buffer) => {
        text += chunk.toString();
        if (text.includes('\n')) resolve(text.split('\n')[0]!);
      });
      socket.once('error', reject);
      socket.once('close', () => reject(new Error(`the userfaultfd guard closed the connection (asked: ${line})`)));
    });
    if (answer.startsWith('error')) throw new Error(`userfaultfd guard: ${answer} (asked: ${line})`);
    return answer;
  } finally {
    socket.destroy();
  }
}

/** Makes the guard duplicate every userfaultfd the daemon holds now; returns the daemon fds held. */
export async function holdUserfaultfds(imageDir: string): Promise<number[]> {
  const answer = await askGuard(imageDir, 'take');
  return answer.split(' ').slice(1).map(Number);
}

/** Which daemon fd carries which task's userfaultfd (the daemon logs "Received PID: p, uffd: fd"). */
async function uffdOfTask(imageDir: string): Promise<Map<number, number>> {
  const log = await readFile(files(imageDir).daemonLog, 'utf8').catch(() => '');
  return new Map([...log.matchAll(/Received PID: (\d+), uffd: (\d+)/g)].map((m) => [Number(m[1]), Number(m[2])]));
}

/** Host PIDs of the container's processes by their PID inside it (= the image's). */
export async function hostPidsByImagePid(initHostPid: number): Promise<Map<number, number>> {
  const pidns = await readlink(`/proc/${initHostPid}/ns/pid`);
  const byImagePid = new Map<number, number>();
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if ((await readlink(`/proc/${entry}/ns/pid`)) !== pidns) continue;
      const nspid = /^NSpid:\s+(.*)$/m.exec(await readFile(`/proc/${entry}/status`, 'utf8'))?.[1]?.trim().split(/\s+/);
      if (nspid) byImagePid.set(Number(nspid[nspid.length - 1]), Number(entry));
    } catch {
      /* a process that just exited */
    }
  }
  return byImagePid;
}

export interface MissingPages {
  task: TaskPages;
  hostPid?: number;
  runs: Array<{ vaddr: number; pages: number }>;
}

/** Lazy pages of every task still absent from the running processes (a task that exited has none). */
export async function missingPages(imageDir: string, initHostPid: number): Promise<MissingPages[]> {
  const hostPids = await hostPidsByImagePid(initHostPid);
  const result: MissingPages[] = [];
  for (const task of await imageTasks(imageDir)) {
    const hostPid = hostPids.get(task.pid);
    result.push({ task, hostPid, runs: hostPid ? await missingLazyRuns(task, hostPid).catch(() => []) : [] });
  }
  return result;
}

/**
 * Copies every missing lazy page in through the guard, fetched from a page server (after the
 * daemon was lost). Pages the process dropped meanwhile come back as "gone" and are skipped.
 */
export async function fillMissingPages(imageDir: string, initHostPid: number, source: PageServerClient, onProgress: () => void): Promise<FillResult> {
  const result: FillResult = { copied: 0, existed: 0, gone: 0 };
  const uffds = await uffdOfTask(imageDir);
  for (const { task, runs } of await missingPages(imageDir, initHostPid)) {
    if (!runs.length) continue;
    const uffd = uffds.get(task.pid);
    if (uffd === undefined) throw new Error(`the lazy-pages daemon's log does not say which userfaultfd serves task ${task.pid}`);
    for (const run of runs) {
      for (let done = 0; done < run.pages; ) {
        const vaddr = run.vaddr + done * PAGE_SIZE;
        const got = await source.get(task.pid, vaddr, Math.min(FILL_PAGES, run.pages - done));
        const [, copied, existed, gone] = (await askGuard(imageDir, `copy ${uffd} ${vaddr.toString(16)} ${got.data.length}`, got.data)).split(' ').map(Number);
        result.copied += copied!;
        result.existed += existed!;
        result.gone += gone!;
        done += got.pages;
        onProgress();
      }
    }
    // With the daemon gone, nobody reads the processes' events (fork, remove...): they must not block.
    await askGuard(imageDir, 'drain');
  }
  return result;
}

/** The window is over: the guard lets go (every page is in) and the daemon, if still there, stops. */
export async function endLazyRestore(imageDir: string): Promise<void> {
  const f = files(imageDir);
  const guard = await readPidFile(f.guardPid);
  if (guard && isAlive(guard)) {
    await askGuard(imageDir, 'release').catch(() => undefined);
    await stopPid(guard, 2_000);
  }
  for (const pidFile of [f.wrapperPid, f.daemonPid]) {
    const pid = await readPidFile(pidFile);
    if (pid) await stopPid(pid, 2_000);
  }
  await rm(f.guardSocket, { force: true });
}
