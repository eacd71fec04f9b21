/**
 * Pushing artifacts across the WAN with sftp (ssh2-sftp-client), from the source cloud's worker to
 * the destination cloud's sshd. Bytes are hashed in flight; the destination re-hashes what it
 * stored before anything is restored from it. A retried transfer of a CRIU image resumes: files
 * the previous attempt finished are kept, a file it left half-written continues at the offset
 * the destination has. The bytes that crossed the link are counted, attempts included: those of
 * earlier attempts as the destination's files show them (what an attempt wrote but the link
 * never carried, e.g. buffers of a killed worker, is not counted); a transfer that fails for
 * good counts what its last heartbeat said it had written (an upper bound).
 */
import { createReadStream } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import type SftpClient from 'ssh2-sftp-client';
import type { ArtifactKind, ArtifactReceipt, FileDigest, TransferEndpoint, TransferHeartbeat } from '../lib/types';
import { DigestCounter, estimateTarBytes, manifestDigest, tarDirectory } from './artifacts';
import type { Attempt } from './attempt';
import { withSftp } from './sftp-sessions';

export function artifactFileName(kind: ArtifactKind): string {
  return `${kind}.tar`;
}

interface PushOptions {
  dir: string;
  kind: ArtifactKind;
  endpoint: TransferEndpoint;
  privateKeyPath: string;
  attempt: Attempt;
  /** Only these files (a resend of files that arrived corrupt); all when absent. */
  only?: string[];
}

/** What earlier attempts of this transfer reported in their last heartbeat. */
function previous(attempt: Attempt, kind: ArtifactKind): TransferHeartbeat | undefined {
  const details = attempt.previousDetails as TransferHeartbeat | undefined;
  return details?.kind === kind ? details : undefined;
}

/**
 * Flips one byte of the stream after it was hashed, when a test injects "corrupt" at
 * "transfer:mid": the destination's digest check must catch it.
 */
export class Corrupter extends Transform {
  armed = false;

  /** The chunk, or a copy with one byte flipped when armed (once). */
  apply(chunk: Buffer): Buffer {
    if (!this.armed || chunk.length === 0) return chunk;
    this.armed = false;
    const copy = Buffer.from(chunk);
    copy[copy.length >> 1] ^= 0xff;
    return copy;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null, data?: Buffer) => void): void {
    done(null, this.apply(chunk));
  }
}

/** Sends a directory as one tar stream (keeps symlinks and modes: for root filesystems). */
export async function pushDirectoryAsTar(opts: PushOptions): Promise<ArtifactReceipt> {
  const started = Date.now();
  const remotePath = path.posix.join(opts.endpoint.directory, artifactFileName(opts.kind));
  const prior = previous(opts.attempt, opts.kind);
  const priorWire = prior?.wireBytes ?? 0;
  // The stream's size, for the progress bars: walked beside the tar, so the copy does not wait for it.
  let totalBytes: number | undefined;
  estimateTarBytes(opts.dir).then((n) => (totalBytes = n), () => undefined);
  const counter = new DigestCounter((bytes) => opts.attempt.progress({ kind: opts.kind, bytes, wireBytes: priorWire + bytes, done: [], ...(totalBytes ? { totalBytes } : {}) } satisfies TransferHeartbeat));
  let leftByEarlier = 0;
  await withSftp(opts.endpoint, opts.privateKeyPath, opts.attempt.signal, async (sftp) => {
    // What a failed earlier attempt delivered (overwritten now) crossed the link too.
    if (opts.attempt.attemptNumber > 1) leftByEarlier = await remoteSize(sftp, remotePath);
    const tar = tarDirectory(opts.dir);
    await Promise.all([sftp.put(tar.stream.pipe(counter), remotePath, { writeStreamOptions: { mode: 0o600 } }), tar.finished]);
  });
  return {
    kind: opts.kind,
    remotePath,
    bytes: counter.bytes,
    wireBytes: leftByEarlier + counter.bytes,
    resumedBytes: 0,
    sha256: counter.digest(),
    durationMs: Date.now() - started,
  };
}

async function remoteSize(sftp: SftpClient, file: string): Promise<number> {
  try {
    return (await sftp.stat(file)).size;
  } catch {
    return 0;
  }
}

/**
 * Sends the regular files of a flat directory (a CRIU image) a few at a time into a remote
 * directory of the same name, so the destination can restore straight from it.
 */
export async function pushFlatDirectory(opts: PushOptions): Promise<ArtifactReceipt> {
  const started = Date.now();
  const { attempt, kind } = opts;
  const remoteDir = path.posix.join(opts.endpoint.directory, kind);
  const entries = await readdir(opts.dir, { withFileTypes: true });
  const odd = entries.filter((e) => !e.isFile());
  if (odd.length) throw new Error(`${opts.dir} is not a flat directory of files: ${odd.map((e) => e.name).join(', ')}`);
  const names = entries.map((e) => e.name).sort();
  if (opts.only) {
    const unknown = opts.only.filter((n) => !names.includes(n));
    if (unknown.length) throw new Error(`cannot resend ${unknown.join(', ')}: not in ${opts.dir}`);
  }
  const wanted = opts.only ?? names;
  const prior = previous(attempt, kind);
  const done = new Map((prior?.done ?? []).map((f) => [f.name, f]));
  // A resend replaces files: what an earlier attempt finished of them is not to be trusted.
  for (const name of opts.only ?? []) done.delete(name);
  const priorWire = prior?.wireBytes ?? 0;
  let wire = 0;
  let delivered = 0;
  let resumedBytes = 0;
  let discarded = 0;
  const files: FileDigest[] = [];
  const totalBytes = (await Promise.all(wanted.map(async (name) => (await stat(path.join(opts.dir, name))).size))).reduce((sum, size) => sum + size, 0);
  const beat = () => attempt.progress({ kind, bytes: delivered, wireBytes: priorWire + wire, done: [...done.values()], totalBytes } satisfies TransferHeartbeat);
  let corruptChecked = false;

  await withSftp(opts.endpoint, opts.privateKeyPath, attempt.signal, async (sftp) => {
    await sftp.mkdir(remoteDir, true);
    const queue = [...wanted];
    const sendNext = async (): Promise<void> => {
      for (let name = queue.shift(); name !== undefined; name = queue.shift()) {
        const local = path.join(opts.dir, name);
        const remote = path.posix.join(remoteDir, name);
        const size = (await stat(local)).size;
        const have = opts.only?.includes(name) ? 0 : await remoteSize(sftp, remote);
        const finished = done.get(name);
        if (finished && finished.bytes === size && have === size) {
          files.push(finished); // the previous attempt sent it whole; the destination checks it anyway
          delivered += size;
          resumedBytes += size;
          beat();
          continue;
        }
        // Continue a half-written file where the destination's copy ends (its digest covers it all).
        const offset = have > 0 && have <= size ? have : 0;
        if (have > size) discarded += have; // an earlier attempt's bytes, not reusable
        const tamper = new Corrupter();
        let before = 0;
        const counter = new DigestCounter((bytes) => {
          wire += bytes - before;
          delivered += bytes - before;
          before = bytes;
          beat();
          if (!corruptChecked && wire >= 1 << 20) {
            corruptChecked = true;
            void attempt.fault('transfer:mid').then((action) => {
              if (action === 'corrupt') tamper.armed = true;
            });
          }
        });
        if (offset > 0) {
          const prefix = await hashPrefix(local, offset, counter, attempt.signal);
          delivered += prefix;
          resumedBytes += prefix;
        }
        const source: Readable = createReadStream(local, { highWaterMark: 1 << 20, start: offset });
        // ssh2's write stream takes flags "r+" and a start offset; the wrapper's types list fewer options.
        const writeStreamOptions = (offset > 0 ? { flags: 'r+', start: offset, mode: 0o600 } : { mode: 0o600 }) as { mode: number };
        await sftp.put(source.pipe(counter).pipe(tamper), remote, { writeStreamOptions });
        const digest: FileDigest = { name, bytes: size, sha256: counter.digest() };
        files.push(digest);
        done.set(name, digest);
        beat();
      }
    };
    await Promise.all([sendNext(), sendNext(), sendNext(), sendNext()]);
  });
  files.sort((a, b) => a.name.localeCompare(b.name));
  const bytes = files.reduce((sum, f) => sum + f.bytes, 0);
  // On the link: what earlier attempts delivered (kept or discarded, as the destination's files
  // show: bytes they wrote that never arrived are not counted) and what this attempt sent.
  return { kind, remotePath: remoteDir, bytes, wireBytes: resumedBytes + discarded + wire, resumedBytes, sha256: manifestDigest(files), files, durationMs: Date.now() - started };
}

/** Feeds the first `end` bytes of a file into `counter`'s hash (not counted as sent). */
export async function hashPrefix(file: string, end: number, counter: DigestCounter, signal: AbortSignal): Promise<number> {
  let read = 0;
  await new Promise<void>((resolve, reject) => {
    createReadStream(file, { highWaterMark: 1 << 20, end: end - 1, signal })
      .on('data', (chunk: string | Buffer) => {
        counter.absorb(Buffer.from(chunk));
        read += chunk.length;
      })
      .on('error', reject)
      .on('end', resolve);
  });
  return read;
}
