/**
 * CRIU's memory images as post-copy needs them: which pages of each task CRIU restores eagerly
 * (sent inside the freeze) and which lazily (fetched afterwards), read from pagemap-PID.img; and
 * the page server protocol, to fetch pages a lost lazy-pages daemon never copied.
 *
 * pagemap-PID.img (criu/images/pagemap.proto): pagemap_head {pages_id}, then pagemap_entry
 * {vaddr, nr_pages, flags} records.
 * Pages flagged PE_PRESENT are stored in pages-<pages_id>.img in entry order.
 */
import { copyFile, link, mkdir, open, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { num, readImageRecords } from './criu-image';

export const PAGE_SIZE = 4096;
const PE_LAZY = 1 << 1;
const PE_PRESENT = 1 << 2;

export interface PagemapEntry {
  vaddr: number;
  pages: number;
  lazy: boolean;
  /** Offset of its pages in the pages file (entries not present hold no data). */
  offset?: number;
}

export interface TaskPages {
  /** The task's PID inside the container (as in the image). */
  pid: number;
  pagesFile: string;
  entries: PagemapEntry[];
}

export async function readPagemap(file: string): Promise<{ pagesId: number; entries: PagemapEntry[] }> {
  const [head, ...records] = await readImageRecords(file);
  const pagesId = head && num(head, 1);
  if (pagesId === undefined) throw new Error(`${file} has no pagemap head`);
  let offset = 0;
  const entries = records.map((r): PagemapEntry => {
    const pages = num(r, 5) ?? num(r, 2) ?? 0;
    const flags = num(r, 4) ?? PE_PRESENT;
    const entry: PagemapEntry = { vaddr: num(r, 1) ?? 0, pages, lazy: (flags & PE_LAZY) !== 0 };
    if (flags & PE_PRESENT) {
      entry.offset = offset;
      offset += pages * PAGE_SIZE;
    }
    return entry;
  });
  return { pagesId, entries };
}

/** Every task of an image with its memory layout. */
export async function imageTasks(imageDir: string): Promise<TaskPages[]> {
  const tasks: TaskPages[] = [];
  for (const name of await readdir(imageDir)) {
    const match = /^pagemap-(\d+)\.img$/.exec(name);
    if (!match) continue;
    const { pagesId, entries } = await readPagemap(path.join(imageDir, name));
    tasks.push({ pid: Number(match[1]), pagesFile: `pages-${pagesId}.img`, entries });
  }
  return tasks.sort((a, b) => a.pid - b.pid);
}

/** Byte ranges [offset, length] of a task's pages file that a lazy restore reads locally. */
export function eagerExtents(task: TaskPages): Array<[number, number]> {
  const extents: Array<[number, number]> = [];
  for (const e of task.entries) {
    if (e.offset === undefined || e.lazy) continue;
    const last = extents[extents.length - 1];
    if (last && last[0] + last[1] === e.offset) last[1] += e.pages * PAGE_SIZE;
    else extents.push([e.offset, e.pages * PAGE_SIZE]);
  }
  return extents;
}

export function lazyPageCount(tasks: TaskPages[]): number {
  return tasks.reduce((sum, t) => sum + t.entries.filter((e) => e.lazy && e.offset !== undefined).reduce((s, e) => s + e.pages, 0), 0);
}

/**
 * Runs of a task's lazy pages that are not in the running process yet (bit 63 "present" or 62
 * "swapped" of /proc/PID/pagemap): the kernel's view, independent of CRIU's accounting.
 */
export async function missingLazyRuns(task: TaskPages, hostPid: number): Promise<Array<{ vaddr: number; pages: number }>> {
  const pagemap = await open(`/proc/${hostPid}/pagemap`, 'r');
  const runs: Array<{ vaddr: number; pages: number }> = [];
  try {
    for (const e of task.entries) {
      if (!e.lazy || e.offset === undefined) continue;
      const raw = Buffer.alloc(e.pages * 8);
      await pagemap.read(raw, 0, raw.length, (e.vaddr / PAGE_SIZE) * 8);
      let start = -1;
      for (let i = 0; i <= e.pages; i++) {
        const here = i < e.pages && (raw[i * 8 + 7]! & 0xc0) === 0; // bits 63 (present) and 62 (swapped) both clear
        if (here && start < 0) start = i;
        if (!here && start >= 0) {
          runs.push({ vaddr: e.vaddr + start * PAGE_SIZE, pages: i - start });
          start = -1;
        }
      }
    }
  } finally {
    await pagemap.close();
  }
  return runs;
}

// The page server protocol (criu/page-xfer.c): 32-byte requests {u32 cmd, pad, u64 nr_pages,
// u64 vaddr, u64 dst_id}; PS_IOV_GET is answered by the same header and the pages.
const PS_IOV_GET = 7;

/** Reads exactly `n` bytes from a stream (or fails when it ends first). */
class StreamReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private waiting?: () => void;
  private ended?: Error;

  constructor(stream: Duplex) {
    stream.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
      this.waiting?.();
    });
    const end = (err?: Error) => {
      this.ended ??= err ?? new Error('the page server closed the connection');
      this.waiting?.();
    };
    stream.on('end', () => end());
    stream.on('close', () => end());
    stream.on('error', (err: Error) => end(err));
  }

  async read(n: number): Promise<Buffer> {
    while (this.buffered < n) {
      if (this.ended) throw this.ended;
      await new Promise<void>((resolve) => (this.waiting = resolve));
      this.waiting = undefined;
    }
    const all = Buffer.concat(this.chunks);
    this.chunks = all.length > n ? [all.subarray(n)] : [];
    this.buffered = all.length - n;
    return all.subarray(0, n);
  }
}

/** A client of `criu page-server --lazy-pages` serving a complete image. */
export class PageServerClient {
  private readonly reader: StreamReader;

  constructor(private readonly stream: Duplex) {
    this.reader = new StreamReader(stream);
  }

  /** Up to `pages` pages of task `pid` from `vaddr` (the server may answer fewer). */
  async get(pid: number, vaddr: number, pages: number): Promise<{ pages: number; data: Buffer }> {
    const request = Buffer.alloc(32);
    request.writeUInt32LE(PS_IOV_GET, 0);
    request.writeBigUInt64LE(BigInt(pages), 8);
    request.writeBigUInt64LE(BigInt(vaddr), 16);
    request.writeBigUInt64LE(BigInt(pid), 24);
    this.stream.write(request);
    const header = await this.reader.read(32);
    const got = Number(header.readBigUInt64LE(8));
    if (got <= 0 || got > pages || Number(header.readBigUInt64LE(16)) !== vaddr) {
      throw new Error(`the page server answered ${got} pages at 0x${header.readBigUInt64LE(16).toString(16)} for ${pages} at 0x${vaddr.toString(16)} of task ${pid}`);
    }
    return { pages: got, data: await this.reader.read(got * PAGE_SIZE) };
  }

}

/** What a post-copy freeze sends: every image file but the lazy pages, whose extents it lists. */
interface EagerManifest {
  pages: Array<{ file: string; size: number; extents: Array<[number, number]> }>;
}
const EAGER_MANIFEST = 'post-copy.json';
const EAGER_SUFFIX = '.eager';

/**
 * Source: the part of a complete image that a lazy restore reads at once, in `outDir`: every
 * file (hard links) but the tasks' pages files, replaced by their eager pages only (`.eager`) and
 * a manifest of where those go. Returns the memory bytes left for later and those sent now.
 */
export async function splitForPostCopy(imageDir: string, outDir: string): Promise<{ lazyBytes: number; eagerBytes: number }> {
  await rm(outDir, { recursive: true, force: true });
  await mkdir(outDir, { recursive: true });
  const tasks = await imageTasks(imageDir);
  const split = new Set(tasks.map((t) => t.pagesFile));
  const manifest: EagerManifest = { pages: [] };
  let eagerBytes = 0;
  for (const task of tasks) {
    const extents = eagerExtents(task);
    const source = await open(path.join(imageDir, task.pagesFile), 'r');
    const out = await open(path.join(outDir, task.pagesFile + EAGER_SUFFIX), 'w');
    try {
      for (const [offset, length] of extents) {
        const buf = Buffer.alloc(length);
        await source.read(buf, 0, length, offset);
        await out.write(buf);
        eagerBytes += length;
      }
      manifest.pages.push({ file: task.pagesFile, size: (await source.stat()).size, extents });
    } finally {
      await source.close();
      await out.close();
    }
  }
  for (const name of await readdir(imageDir)) {
    if (split.has(name)) continue;
    await link(path.join(imageDir, name), path.join(outDir, name)).catch(() => copyFile(path.join(imageDir, name), path.join(outDir, name)));
  }
  await writeFile(path.join(outDir, EAGER_MANIFEST), JSON.stringify(manifest));
  return { lazyBytes: lazyPageCount(tasks) * PAGE_SIZE, eagerBytes };
}

/** Destination: rebuilds each pages file at full size from its eager pages (the lazy ones stay holes). */
export async function joinEagerPages(dir: string): Promise<void> {
  const manifest = JSON.parse(await readFile(path.join(dir, EAGER_MANIFEST), 'utf8')) as EagerManifest;
  for (const { file, size, extents } of manifest.pages) {
    const eager = await readFile(path.join(dir, file + EAGER_SUFFIX));
    const out = await open(path.join(dir, file), 'w');
    try {
      await out.truncate(size);
      let at = 0;
      for (const [offset, length] of extents) {
        await out.write(eager, at, length, offset);
        at += length;
      }
    } finally {
      await out.close();
    }
  }
}
