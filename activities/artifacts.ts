/** Packing directories into tar streams and checking what arrived: the byte-level half of a transfer. */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { run } from '../lib/exec';

/** A pass-through that hashes and counts what flows through it. */
export class DigestCounter extends Transform {
  private readonly hash = createHash('sha256');
  bytes = 0;

  constructor(private readonly onProgress: (bytes: number) => void = () => {}) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: (err?: Error | null, data?: Buffer) => void): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    this.onProgress(this.bytes);
    done(null, chunk);
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

export async function sha256File(file: string): Promise<{ sha256: string; bytes: number }> {
  const counter = new DigestCounter();
  await new Promise<void>((resolve, reject) => {
    createReadStream(file).on('error', reject).pipe(counter).on('error', reject).on('finish', resolve).resume();
  });
  return { sha256: counter.digest(), bytes: counter.bytes };
}

export async function unpackTar(tarFile: string, dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  await run('tar', ['--numeric-owner', '-C', dir, '-xf', tarFile]);
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
