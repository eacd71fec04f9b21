/**
 * CRIU's memory images as post-copy needs them: which pages of each task CRIU restores eagerly
 * (sent inside the freeze) and which lazily (fetched afterwards), read from pagemap-PID.img; and
 * the page server protocol, to fetch pages a lost lazy-pages daemon never copied.
 *
 * pagemap-PID.img (criu/images/pagemap.proto): pagemap_head {pages_id}, then pagemap_entry
 * {vaddr, nr_pages, flags} records.
 * Pages flagged PE_PRESENT are stored in pages-<pages_id>.img in entry order; a lazy dump flags
 * its lazy pages PE_LAZY alone and leaves them out of the file (a normal dump: PE_PRESENT|PE_LAZY).
 */
import { open, readdir } from 'node:fs/promises';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { num, readImageRecords } from './criu-image';

export const PAGE_SIZE = 4096;
export const PE_LAZY = 1 << 1;
export const PE_PRESENT = 1 << 2;

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

export function lazyPageCount(tasks: TaskPages[]): number {
  return tasks.reduce((sum, t) => sum + t.entries.filter((e) => e.lazy).reduce((s, e) => s + e.pages, 0), 0);
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
      if (!e.lazy) continue;
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
export const PS_IOV_GET = 7;

/** Reads exactly `n` bytes from a stream (or fails when it ends first). */
export class StreamReader {
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
