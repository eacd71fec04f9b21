/**
 * Post-copy, source, with the frozen processes as the first copy of their memory: the freeze no
 * longer writes the memory out (for 1 GiB that was ~0.7 s of it).
 *
 * - `runc checkpoint --lazy-pages` writes every image file but the lazy pages, then waits for a
 *   page-server client on the loopback, its processes seized and frozen, their sockets in repair
 *   mode. Nobody connects until MigraVI lets the processes go: the dump holds them, and it does
 *   not depend on this worker (it runs in its own session).
 * - A page server here answers the destination's lazy-pages daemon from those processes'
 *   memory (/proc/PID/mem), then from the durable image once it is written.
 * - The durable image — a complete image, as a normal dump writes it — is written from the same
 *   memory behind the restore. Only once it is complete is the dump released: CRIU then kills the
 *   processes (sockets still in repair: nothing is sent), as after a normal dump.
 *
 * A worker that dies loses neither copy: the dump keeps holding, and the next worker writes the
 * image again from the processes. What is lost only with the host is lost with it either way.
 */
import { link, mkdir, open, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { isAlive, waitFor } from '../../lib/processes';
import { trackChild } from '../../lib/exec';
import { encode, imageFile, imageRecords, num } from './criu-image';
import { imageTasks, PAGE_SIZE, PE_LAZY, PE_PRESENT, PS_IOV_GET, StreamReader, type TaskPages } from './criu-pages';
import { hostPidsByImagePid, listening, spawnDetached, tail } from './lazy-restore';

const PS_IOV_ADD_F = 6;
const PS_IOV_CLOSE = 0x1023;
const PS_IOV_FORCE_CLOSE = 0x1024;
/** Bytes read from the processes per step while the durable image is written. */
const DRAIN_CHUNK = 4 * 1024 * 1024;
/** Bytes read per step while answering a page request. */
const SERVE_CHUNK = 256 * 1024;

function files(lazyDir: string) {
  const work = `${lazyDir}.work`;
  return {
    work,
    hold: path.join(work, 'hold.json'),
    /** Written once the dump holds: its images are complete from then on. */
    held: path.join(work, 'held'),
    runcLog: path.join(work, 'runc-checkpoint.log'),
    dumpLog: path.join(work, 'dump.log'),
  };
}

/** Written once the durable image is complete (next to CRIU's own work files of that image). */
const writtenMarker = (imageDir: string) => path.join(`${imageDir}.work`, 'written-from-processes.json');

/** "orphaned": the dump held the processes, then its CRIU died (they stay frozen: see checkpointHeld). */
export type HeldDumpState = 'holding' | 'orphaned' | 'released' | 'failed' | 'none';

/** The loopback port CRIU's dump waits on: any free one, chosen by the kernel. */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/**
 * Starts the held dump (`runcArgv` up to the options this adds) and returns once every image file
 * but the lazy pages is written: CRIU listens only after closing its images.
 */
export async function startHeldDump(runcArgv: string[], name: string, lazyDir: string, keepTcp: boolean, pidFile: string): Promise<void> {
  const f = files(lazyDir);
  await mkdir(lazyDir, { recursive: true });
  await mkdir(f.work, { recursive: true });
  const port = await freePort();
  const argv = [...runcArgv, 'checkpoint', '--lazy-pages', '--page-server', `127.0.0.1:${port}`, '--image-path', lazyDir, '--work-path', f.work, ...(keepTcp ? ['--tcp-established'] : []), name];
  const child = spawnDetached(argv, f.runcLog);
  const pid = child.pid!;
  await writeFile(f.hold, JSON.stringify({ pid, port }));
  await writeFile(pidFile, String(pid)); // where a teardown finds it
  // The attempt's child while it dumps (its CPU is progress; a given-up attempt kills it), not once it holds.
  const untrack = trackChild(child);
  try {
    await untilHolding(pid, port);
    await writeFile(f.held, '');
    untrack();
  } catch (err) {
    untrack();
    // Not left dumping behind the caller's back: runc and CRIU (its own process group) go.
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      /* gone already */
    }
    throw new Error(`runc checkpoint --lazy-pages did not hold the processes: ${(err as Error).message}\n${await tail(f.runcLog)}\n${await tail(f.dumpLog)}`);
  }
}

/**
 * Ends a held dump for good, its processes with it (they stay frozen for whoever removes the
 * container): a teardown's, or a removal's, never a migration's way to let them go.
 */
export async function killHeldDump(pidFile: string): Promise<void> {
  const pid = await readFile(pidFile, 'utf8').then((t) => Number(t.trim()), () => 0);
  if (pid > 0 && isAlive(pid)) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      /* gone */
    }
    await waitFor(`the held dump (pid ${pid}) to end`, () => !isAlive(pid), 10_000, 10);
  }
  await rm(pidFile, { force: true });
}

/** Until the dump listens for its page-server client (its images are closed then), or ends. */
async function untilHolding(pid: number, port: number): Promise<boolean> {
  let holding = false;
  await waitFor('the lazy dump to write its images', async () => {
    holding = await listening(port);
    if (!holding && !isAlive(pid)) throw new Error('it exited');
    return holding;
  }, 60_000, 1);
  return holding;
}

/** Where a held dump stands; one still writing its images is waited for. */
export async function heldDumpState(lazyDir: string): Promise<HeldDumpState> {
  const f = files(lazyDir);
  const hold = await readFile(f.hold, 'utf8').then((t) => JSON.parse(t) as { pid: number; port: number }).catch(() => undefined);
  if (!hold) return 'none';
  if (isAlive(hold.pid) && (await untilHolding(hold.pid, hold.port).catch(() => false))) return 'holding';
  if (/Dumping finished successfully/.test(await readFile(f.dumpLog, 'utf8').catch(() => ''))) return 'released';
  return (await readFile(f.held, 'utf8').then(() => true, () => false)) ? 'orphaned' : 'failed';
}

/**
 * Lets the processes go: a client that connects and leaves ends CRIU's lazy transfer, after which
 * it kills them and runc removes the container. `thaw` first: CRIU waits for its kills to land,
 * which a frozen cgroup never lets them (the processes stay stopped by CRIU meanwhile).
 */
export async function releaseHeldDump(lazyDir: string, thaw: () => Promise<void>): Promise<void> {
  const f = files(lazyDir);
  if ((await heldDumpState(lazyDir)) !== 'holding') return;
  const { pid, port } = JSON.parse(await readFile(f.hold, 'utf8')) as { pid: number; port: number };
  await thaw();
  await new Promise<void>((resolve) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.end());
    socket.on('close', () => resolve());
    socket.on('error', () => resolve());
  });
  await waitFor('the lazy dump to end', () => !isAlive(pid), 30_000, 5);
  if ((await heldDumpState(lazyDir)) !== 'released') throw new Error(`the lazy dump did not end cleanly:\n${await tail(f.dumpLog)}`);
}

/** Whether the durable image was written in full from the held processes. */
export async function writtenFromProcesses(imageDir: string): Promise<boolean> {
  return readFile(writtenMarker(imageDir), 'utf8').then(() => true, () => false);
}

/**
 * The durable image in `imageDir`: the lazy dump's files with each task's lazy pages read from its
 * held process and stored in its pages file, flagged present (what a normal dump writes).
 * `onChunk` runs after every few MiB (progress, fault points).
 */
export async function writeImageFromProcesses(lazyDir: string, imageDir: string, hostPids: Map<number, number>, onChunk: () => Promise<void>): Promise<{ bytes: number; ms: number }> {
  const started = Date.now();
  await mkdir(imageDir, { recursive: true });
  await mkdir(`${imageDir}.work`, { recursive: true });
  for (const name of await readdir(imageDir)) await rm(path.join(imageDir, name), { recursive: true, force: true });
  const tasks = await imageTasks(lazyDir);
  const own = new Set(tasks.flatMap((t) => [`pagemap-${t.pid}.img`, t.pagesFile]));
  for (const name of await readdir(lazyDir)) if (!own.has(name)) await link(path.join(lazyDir, name), path.join(imageDir, name));
  let bytes = 0;
  for (const task of tasks) {
    const hostPid = hostPids.get(task.pid);
    if (!hostPid) throw new Error(`process ${task.pid} of the image is not held any more: its memory is lost`);
    const mem = await open(`/proc/${hostPid}/mem`, 'r');
    const eager = await open(path.join(lazyDir, task.pagesFile), 'r');
    const out = await open(path.join(imageDir, task.pagesFile), 'w');
    try {
      const buf = Buffer.alloc(DRAIN_CHUNK);
      for (const e of task.entries) {
        const from = e.lazy && e.offset === undefined ? { fh: mem, at: e.vaddr } : e.offset !== undefined ? { fh: eager, at: e.offset } : undefined;
        if (!from) continue;
        for (let done = 0; done < e.pages * PAGE_SIZE; ) {
          const n = Math.min(DRAIN_CHUNK, e.pages * PAGE_SIZE - done);
          const { bytesRead } = await from.fh.read(buf, 0, n, from.at + done);
          if (bytesRead !== n) throw new Error(`read ${bytesRead} of ${n} bytes at 0x${(from.at + done).toString(16)} of process ${task.pid}`);
          await out.write(buf, 0, n);
          done += n;
          bytes += n;
          await onChunk();
        }
      }
    } finally {
      await Promise.all([mem.close(), eager.close(), out.close()]);
    }
    await writeFile(path.join(imageDir, `pagemap-${task.pid}.img`), await presentPagemap(path.join(lazyDir, `pagemap-${task.pid}.img`)));
  }
  const result = { bytes, ms: Date.now() - started };
  await writeFile(writtenMarker(imageDir), JSON.stringify(result));
  return result;
}

/** A lazy dump's pagemap with its lazy entries flagged present as well (their pages are in the file now). */
async function presentPagemap(file: string): Promise<Buffer> {
  const raw = await readFile(file);
  const [head, ...entries] = imageRecords(raw);
  for (const entry of entries) {
    const flags = num(entry, 4) ?? PE_PRESENT;
    if (flags & PE_LAZY) entry.set(4, [BigInt(flags | PE_PRESENT)]);
  }
  return imageFile(raw, [head!, ...entries].map(encode));
}

/**
 * CRIU's page-server protocol, server side, for the lazy pages of one image (criu/page-xfer.c):
 * each PS_IOV_GET {nr_pages, vaddr, pid} is answered with PS_IOV_ADD_F, the pages it covers (at
 * most to the end of their pagemap entry) and their bytes. Pages come from the held processes'
 * memory until the durable image is complete, then from it.
 */
export class ProcessPageServer {
  private readonly server = net.createServer((socket) => this.serve(socket));
  private readonly sockets = new Set<net.Socket>();
  private readonly memory = new Map<number, Promise<FileHandle>>();
  private image?: { tasks: Map<number, TaskPages>; files: Map<string, Promise<FileHandle>> };
  private closed = false;
  private asked!: () => void;
  /** Resolved by the first page asked for: the restore at the destination is over by then. */
  readonly firstRequest = new Promise<void>((resolve) => (this.asked = resolve));

  constructor(private readonly lazyTasks: Map<number, TaskPages>, private readonly hostPids: Map<number, number>, private readonly log: (line: string) => void) {}

  static async forHeldDump(lazyDir: string, hostPids: Map<number, number>, log: (line: string) => void): Promise<ProcessPageServer> {
    const tasks = new Map((await imageTasks(lazyDir)).map((t) => [t.pid, t]));
    return new ProcessPageServer(tasks, hostPids, log);
  }

  /** Listens on the loopback's `port` (0: any); returns the port. */
  async listen(port: number): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, '127.0.0.1', () => resolve());
    });
    return (this.server.address() as net.AddressInfo).port;
  }

  /** From now on, pages come from the complete image (the processes are about to be released). */
  async useImage(imageDir: string): Promise<void> {
    const tasks = new Map((await imageTasks(imageDir)).map((t) => [t.pid, t]));
    this.image = { tasks, files: new Map([...tasks.values()].map((t) => [t.pagesFile, open(path.join(imageDir, t.pagesFile), 'r')])) };
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    const handles = [...this.memory.values(), ...(this.image ? this.image.files.values() : [])];
    await Promise.all(handles.map((h) => h.then((fh) => fh.close()).catch(() => undefined)));
  }

  /** Where task `pid`'s lazy pages from `vaddr` are, and how many of `wanted` one read can give. */
  private async locate(pid: number, vaddr: number, wanted: number): Promise<{ fh: FileHandle; at: number; pages: number }> {
    const image = this.image;
    const task = (image ?? { tasks: this.lazyTasks }).tasks.get(pid);
    const entry = task?.entries.find((e) => e.lazy && vaddr >= e.vaddr && vaddr < e.vaddr + e.pages * PAGE_SIZE);
    if (!task || !entry || vaddr % PAGE_SIZE) throw new Error(`no lazy page of process ${pid} at 0x${vaddr.toString(16)}`);
    const pages = Math.min(wanted, entry.pages - (vaddr - entry.vaddr) / PAGE_SIZE);
    if (image) return { fh: await image.files.get(task.pagesFile)!, at: entry.offset! + (vaddr - entry.vaddr), pages };
    const hostPid = this.hostPids.get(pid);
    if (!hostPid) throw new Error(`process ${pid} of the image is not held`);
    let mem = this.memory.get(hostPid);
    if (!mem) {
      mem = open(`/proc/${hostPid}/mem`, 'r');
      this.memory.set(hostPid, mem);
    }
    return { fh: await mem, at: vaddr, pages };
  }

  /** Fills `buf` with task `pid`'s pages from `vaddr` (within one pagemap entry). */
  private async readInto(pid: number, vaddr: number, buf: Buffer): Promise<void> {
    for (;;) {
      const usedImage = !!this.image;
      try {
        const { fh, at } = await this.locate(pid, vaddr, buf.length / PAGE_SIZE);
        const { bytesRead } = await fh.read(buf, 0, buf.length, at);
        if (bytesRead !== buf.length) throw new Error(`read ${bytesRead} of ${buf.length} bytes of process ${pid} at 0x${vaddr.toString(16)}`);
        return;
      } catch (err) {
        // The processes were released while this read was on its way: the image has their pages.
        if (!usedImage && this.image) continue;
        throw err;
      }
    }
  }

  private serve(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.setNoDelay(true);
    const reader = new StreamReader(socket);
    const loop = async () => {
      for (;;) {
        const request = await reader.read(32);
        const cmd = request.readUInt32LE(0) & 0xffff;
        if (cmd === (PS_IOV_CLOSE & 0xffff) || cmd === (PS_IOV_FORCE_CLOSE & 0xffff)) {
          socket.end(Buffer.alloc(4)); // status 0: the session is over
          return;
        }
        if (cmd !== PS_IOV_GET) throw new Error(`page-server command ${cmd} is not served here`);
        this.asked();
        const pid = Number(request.readBigUInt64LE(24));
        const vaddr = Number(request.readBigUInt64LE(16));
        const { pages } = await this.locate(pid, vaddr, Number(request.readBigUInt64LE(8)));
        const answer = Buffer.from(request);
        answer.writeUInt32LE(PS_IOV_ADD_F | (PE_PRESENT << 16), 0);
        answer.writeBigUInt64LE(BigInt(pages), 8);
        socket.write(answer);
        // In chunks, each sent while the next is read: the daemon has one request in flight per
        // process, so the time to its first byte is time the link sits idle.
        for (let done = 0; done < pages * PAGE_SIZE; ) {
          const chunk = Buffer.allocUnsafe(Math.min(SERVE_CHUNK, pages * PAGE_SIZE - done));
          await this.readInto(pid, vaddr + done, chunk);
          done += chunk.length;
          if (!socket.write(chunk)) {
            await new Promise<void>((resolve) => {
              socket.once('drain', resolve);
              socket.once('close', resolve);
            });
            if (socket.destroyed) return;
          }
        }
      }
    };
    loop()
      .catch((err: Error) => {
        if (!this.closed && !/closed the connection/.test(err.message)) this.log(`page server: ${err.message}; closing the connection`);
        socket.destroy();
      })
      .finally(() => this.sockets.delete(socket));
  }
}

/**
 * One held dump's page source in this worker: the page server, the durable image being written
 * behind it, and the release of the processes once that image is complete.
 */
export class HeldPageSource {
  private static readonly running = new Map<string, HeldPageSource>();
  readonly written: Promise<boolean>;
  private begin!: () => void;
  private abandoned = false;

  private constructor(
    readonly imageDir: string,
    private readonly server: ProcessPageServer,
    lazyDir: string,
    hostPids: Map<number, number>,
    onChunk: () => Promise<void>,
    log: (line: string) => void,
    letGo: () => Promise<void>,
  ) {
    // Written from the first page asked for: not while the destination restores (the host's CPU
    // is the freeze's then), and nothing hurries it — the held processes are the copy meanwhile.
    // Or at once when this source stops (a rollback or a restarted page source needs the image).
    const begun = new Promise<void>((resolve) => (this.begin = resolve));
    void server.firstRequest.then(() => this.begin());
    const stillWanted = async () => {
      if (this.abandoned) throw new Error('abandoned');
      await onChunk();
    };
    this.written = begun
      .then(() => stillWanted())
      .then(() => writeImageFromProcesses(lazyDir, imageDir, hostPids, stillWanted))
      .then(
        async ({ bytes, ms }) => {
          await server.useImage(imageDir);
          await letGo();
          log(`wrote its ${Math.round(bytes / 1048576)} MiB of memory from the held processes in ${ms} ms, then let them go`);
          return true;
        },
        (err: Error) => {
          if (!this.abandoned) log(`could not write its memory from the held processes: ${err.message}`);
          return false;
        },
      );
  }

  /** Serves the held dump's pages on the loopback's `port` and writes its durable image; nothing to do if this worker already does. */
  static async start(lazyDir: string, imageDir: string, initHostPid: number, port: number, onChunk: () => Promise<void>, log: (line: string) => void, letGo: () => Promise<void>): Promise<HeldPageSource> {
    const existing = HeldPageSource.running.get(imageDir);
    if (existing) return existing;
    const hostPids = await hostPidsByImagePid(initHostPid);
    const server = await ProcessPageServer.forHeldDump(lazyDir, hostPids, log);
    await server.listen(port);
    const source = new HeldPageSource(imageDir, server, lazyDir, hostPids, onChunk, log, letGo);
    HeldPageSource.running.set(imageDir, source);
    return source;
  }

  static get(imageDir: string): HeldPageSource | undefined {
    return HeldPageSource.running.get(imageDir);
  }

  /** Stops serving; the durable image is written now if it is not yet — unless it is of no use any more (`abandonImage`). */
  async stop(opts: { abandonImage?: boolean } = {}): Promise<void> {
    HeldPageSource.running.delete(this.imageDir);
    this.abandoned = opts.abandonImage ?? false;
    this.begin();
    await this.server.close();
  }
}
