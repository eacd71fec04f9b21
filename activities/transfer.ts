/**
 * Pushing artifacts across the WAN with sftp (ssh2-sftp-client), from the source cloud's worker to
 * the destination cloud's sshd. The stream is hashed in flight; the destination re-hashes what it
 * stored before anything is restored from it.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Context } from '@temporalio/activity';
import SftpClient from 'ssh2-sftp-client';
import type { ArtifactKind, ArtifactReceipt, TransferEndpoint } from '../lib/types';
import { DigestCounter, tarDirectory } from './artifacts';

export function artifactFileName(kind: ArtifactKind): string {
  return `${kind}.tar`;
}

export async function pushDirectory(opts: {
  dir: string;
  kind: ArtifactKind;
  endpoint: TransferEndpoint;
  privateKeyPath: string;
}): Promise<ArtifactReceipt> {
  const started = Date.now();
  const { endpoint } = opts;
  const remotePath = path.posix.join(endpoint.directory, artifactFileName(opts.kind));
  const sftp = new SftpClient(`migravi-${opts.kind}`);
  let lastBeat = 0;
  const counter = new DigestCounter((bytes) => {
    const now = Date.now();
    if (now - lastBeat > 500) {
      lastBeat = now;
      Context.current().heartbeat({ kind: opts.kind, bytes });
    }
  });
  await sftp.connect({
    host: endpoint.host,
    port: endpoint.port,
    username: endpoint.username,
    privateKey: await readFile(opts.privateKeyPath),
    readyTimeout: 20_000,
    hostVerifier: (key: Buffer) => createHash('sha256').update(key).digest('base64') === endpoint.hostKeySha256,
  });
  // A cancelled migration stops its transfer at once instead of finishing the upload.
  void Context.current().cancelled.catch(() => sftp.end().catch(() => undefined));
  try {
    const tar = tarDirectory(opts.dir);
    const upload = sftp.put(tar.stream.pipe(counter), remotePath, { writeStreamOptions: { mode: 0o600 } });
    await Promise.all([upload, tar.finished]);
  } finally {
    await sftp.end().catch(() => undefined);
  }
  return { kind: opts.kind, remotePath, bytes: counter.bytes, sha256: counter.digest(), durationMs: Date.now() - started };
}
