/** Packing directories into tar streams and checking what arrived: the byte-level half of a transfer. */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, mkdir, readdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { run } from '../lib/exec';
import type { FileDigest } from '../lib/types';

/**
 * A pass-through that hashes and counts what flows through it, and regroups the stream into
 * large chunks: an sftp write stream sends one request per chunk and waits for its answer, so
 * the 64 KiB chunks of a pipe would cap a transfer at a third of a 1 Gbit/s link.
 */
export class DigestCounter extends Transform {
  private readonly hash = createHash('sha256');
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  bytes = 0;

  constructor(
    private readonly onProgress: (bytes: number) => void = () => {},
    private readonly chunkBytes = 1 << 20,
  ) {
    super({ readableHighWaterMark: chunkBytes });
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: (err?: Error | null) => void): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    this.onProgress(this.bytes);
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    if (this.pendingBytes >= this.chunkBytes) this.flushPending();
    done();
  }

  override _flush(done: (err?: Error | null) => void): void {
    this.flushPending();
    done();
  }

  private flushPending(): void {
    if (this.pendingBytes === 0) return;
    this.push(this.pending.length === 1 ? this.pending[0] : Buffer.concat(this.pending, this.pendingBytes));
    this.pending = [];
    this.pendingBytes = 0;
  }

  /** Hashes bytes that are not sent again (the part of a file the destination already has). */
  absorb(chunk: Buffer): void {
    this.hash.update(chunk);
  }

  digest(): string {
    return this.hash.digest('hex');
  }
}

/** Streams `tar -c` of a directory; `finished` rejects if tar fails (so a partial stream is never taken for whole). */
export function tarDirectory(dir: string): { stream: Readable; finished: Promise<void> } {
  const tar = spawn('tar', ['--numeric-owner', '-C', dir, '-cf', '-', '.'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  tar.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const finished = new Promise<void>((resolve, reject) => {
    tar.on('error', reject);
    tar.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`tar of ${dir} failed (exit ${code}): ${stderr.trim()}`))));
  });
  return { stream: tar.stdout, finished };
}

/**
 * About the size of the tar stream of entries of these sizes (a directory or a link counts 0): a
 * 512-byte header per entry, the data in 512-byte blocks, two empty blocks at the end, all in
 * 10 KiB records (GNU tar's default). Long names add a header each: it is an estimate, for the
 * progress bars, never for a check.
 */
export function tarBytesOf(entrySizes: number[]): number {
  const blocks = entrySizes.reduce((sum, size) => sum + 512 + Math.ceil(size / 512) * 512, 1024);
  return Math.ceil(blocks / 10240) * 10240;
}

/** The tar stream's size of a whole directory, estimated from a walk of it (tarBytesOf). */
export async function estimateTarBytes(dir: string): Promise<number> {
  const sizes: number[] = [];
  const visit = async (at: string): Promise<void> => {
    for (const entry of await readdir(at, { withFileTypes: true })) {
      const full = path.join(at, entry.name);
      if (entry.isDirectory()) {
        sizes.push(0);
        await visit(full);
      } else sizes.push(entry.isFile() ? (await lstat(full)).size : 0);
    }
  };
  sizes.push(0); // "." itself
  await visit(dir);
  return tarBytesOf(sizes);
}

/** Hashes a file; stops when `signal` aborts. */
export async function sha256File(file: string, opts: { signal?: AbortSignal; onProgress?: (bytes: number) => void } = {}): Promise<{ sha256: string; bytes: number }> {
  const counter = new DigestCounter(opts.onProgress);
  await new Promise<void>((resolve, reject) => {
    createReadStream(file, { highWaterMark: 1 << 20, signal: opts.signal })
      .on('error', reject)
      .pipe(counter)
      .on('error', reject)
      .on('finish', resolve)
      .resume();
  });
  return { sha256: counter.digest(), bytes: counter.bytes };
}

export async function unpackTar(tarFile: string, dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  await run('tar', ['--numeric-owner', '-C', dir, '-xf', tarFile]);
}

/** Digest of a list of file digests: one value that names a whole directory's content. */
export function manifestDigest(files: FileDigest[]): string {
  const lines = [...files].sort((a, b) => a.name.localeCompare(b.name)).map((f) => `${f.name} ${f.bytes} ${f.sha256}\n`);
  return createHash('sha256').update(lines.join('')).digest('hex');
}

export interface VerifyResult {
  /** Bytes read back and found identical to what the sender hashed. */
  verifiedBytes: number;
  /** Files whose digest or size differ from the sender's (with what was found). */
  bad: Array<{ name: string; problem: string }>;
}

/** Re-hashes the files in `dir` and compares each with the sender's digest; every file is checked. */
export async function verifyFiles(dir: string, files: FileDigest[], opts: { signal?: AbortSignal; onProgress?: () => void } = {}): Promise<VerifyResult> {
  const result: VerifyResult = { verifiedBytes: 0, bad: [] };
  for (const expected of files) {
    const actual = await sha256File(path.join(dir, expected.name), { signal: opts.signal, onProgress: opts.onProgress }).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return { sha256: 'missing', bytes: 0 };
      throw err;
    });
    if (actual.sha256 !== expected.sha256 || actual.bytes !== expected.bytes) {
      result.bad.push({ name: expected.name, problem: `received ${actual.bytes} bytes sha256 ${actual.sha256}, sent ${expected.bytes} bytes sha256 ${expected.sha256}` });
    } else {
      result.verifiedBytes += actual.bytes;
    }
  }
  return result;
}

/** Total size of the regular files under a directory. */
export async function directoryBytes(dir: string): Promise<number> {
  let total = 0;
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) total += await directoryBytes(full);
    else if (entry.isFile()) total += (await stat(full)).size;
  }
  return total;
}
