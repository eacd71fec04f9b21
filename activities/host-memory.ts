import { mkdir, readFile, statfs } from 'node:fs/promises';

/** Bytes free for an unprivileged writer in the filesystem holding `dir` (created if missing). */
export async function freeBytes(dir: string): Promise<number> {
  await mkdir(dir, { recursive: true });
  const s = await statfs(dir);
  return s.bavail * s.bsize;
}

/** The kernel's estimate of memory available without swapping (MemAvailable): a tmpfs file takes from it. */
export async function availableMemory(): Promise<number> {
  const kib = /^MemAvailable:\s+(\d+) kB/m.exec(await readFile('/proc/meminfo', 'utf8'))?.[1];
  return kib ? Number(kib) * 1024 : 0;
}
