/**
 * Pushing artifacts across the WAN with sftp (ssh2-sftp-client), from the source cloud's worker to
 * the destination cloud's sshd. Bytes are hashed in flight; the destination re-hashes what it
 * stored before anything is restored from it.
 */
import { createReadStream } from 'node:fs';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { Context } from '@temporalio/activity';
import type { ArtifactKind, ArtifactReceipt, FileDigest, TransferEndpoint, TransferHeartbeat } from '../lib/types';
import { DigestCounter, manifestDigest, tarDirectory } from './artifacts';
import { reportProgress } from './heartbeat';
import { withSftp } from './sftp-sessions';

export function artifactFileName(kind: ArtifactKind): string {
  return `${kind}.tar`;
}

/** Heartbeats the bytes sent so far, at most twice a second, for the activity that calls this. */
function progressReporter(kind: ArtifactKind): (bytes: number) => void {
  const ctx = Context.current(); // here, not in the stream callbacks: see reportProgress
  let lastBeat = 0;
  return (bytes) => {
    const now = Date.now();
    if (now - lastBeat > 500) {
      lastBeat = now;
      const heartbeat: TransferHeartbeat = { kind, bytes };
      reportProgress(ctx, heartbeat);
    }
  };
}

/** Sends a directory as one tar stream (keeps symlinks and modes: for root filesystems). */
export async function pushDirectoryAsTar(opts: { dir: string; kind: ArtifactKind; endpoint: TransferEndpoint; privateKeyPath: string }): Promise<ArtifactReceipt> {
  const started = Date.now();
  const remotePath = path.posix.join(opts.endpoint.directory, artifactFileName(opts.kind));
  const counter = new DigestCounter(progressReporter(opts.kind));
  await withSftp(opts.endpoint, opts.privateKeyPath, async (sftp) => {
    const tar = tarDirectory(opts.dir);
    await Promise.all([sftp.put(tar.stream.pipe(counter), remotePath, { writeStreamOptions: { mode: 0o600 } }), tar.finished]);
  });
  return { kind: opts.kind, remotePath, bytes: counter.bytes, sha256: counter.digest(), durationMs: Date.now() - started };
}

/**
 * Sends the regular files of a flat directory (a CRIU image) one by one, a few at a time, into a
 * remote directory of the same name, so the destination can restore straight from it.
 */
export async function pushFlatDirectory(opts: { dir: string; kind: ArtifactKind; endpoint: TransferEndpoint; privateKeyPath: string }): Promise<ArtifactReceipt> {
  const started = Date.now();
  const remoteDir = path.posix.join(opts.endpoint.directory, opts.kind);
  const entries = await readdir(opts.dir, { withFileTypes: true });
  const odd = entries.filter((e) => !e.isFile());
  if (odd.length) throw new Error(`${opts.dir} is not a flat directory of files: ${odd.map((e) => e.name).join(', ')}`);
  const names = entries.map((e) => e.name).sort();
  const files: FileDigest[] = [];
  let sent = 0;
  const report = progressReporter(opts.kind);
  await withSftp(opts.endpoint, opts.privateKeyPath, async (sftp) => {
    await sftp.rmdir(remoteDir, true).catch(() => undefined); // a retry starts clean
    await sftp.mkdir(remoteDir, true);
    const queue = [...names];
    const sendNext = async (): Promise<void> => {
      for (let name = queue.shift(); name !== undefined; name = queue.shift()) {
        let before = 0;
        const counter = new DigestCounter((bytes) => {
          sent += bytes - before;
          before = bytes;
          report(sent);
        });
        const source = createReadStream(path.join(opts.dir, name), { highWaterMark: 1 << 20 });
        await sftp.put(source.pipe(counter), path.posix.join(remoteDir, name), { writeStreamOptions: { mode: 0o600 } });
        files.push({ name, bytes: counter.bytes, sha256: counter.digest() });
      }
    };
    await Promise.all([sendNext(), sendNext(), sendNext(), sendNext()]);
  });
  files.sort((a, b) => a.name.localeCompare(b.name));
  const bytes = files.reduce((sum, f) => sum + f.bytes, 0);
  return { kind: opts.kind, remotePath: remoteDir, bytes, sha256: manifestDigest(files), files, durationMs: Date.now() - started };
}
