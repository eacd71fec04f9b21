/**
 * sftp sessions to peer clouds, kept open between the transfers of one migration: the rootfs
 * pre-copy opens the session, and the checkpoint transfer — inside the blackout — reuses it
 * instead of paying ~100 ms of SSH handshake. A session idle for a minute is closed; one that
 * failed is never reused.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { Duplex } from 'node:stream';
import SftpClient from 'ssh2-sftp-client';
import type { TransferEndpoint } from '../lib/types';

const IDLE_CLOSE_MS = 60_000;

interface Session {
  sftp: SftpClient;
  users: number;
  idleTimer?: NodeJS.Timeout;
}

const sessions = new Map<string, Promise<Session>>();

/** A new SSH (sftp) connection to a peer's sshd, its host key checked; `extra` adds ssh2 options. */
export async function connectPeer(endpoint: TransferEndpoint, privateKeyPath: string, extra: Partial<SftpClient.ConnectOptions> = {}): Promise<SftpClient> {
  const sftp = new SftpClient('migravi');
  await sftp.connect({
    host: endpoint.host,
    port: endpoint.port,
    username: endpoint.username,
    privateKey: await readFile(privateKeyPath),
    // A cut link must fail fast: the attempt is retried, and resumes where the data allows.
    readyTimeout: 4_000,
    // The peer's host key must be the one its worker announced: no trust on first use.
    hostVerifier: (key: Buffer) => createHash('sha256').update(key).digest('base64') === endpoint.hostKeySha256,
    ...extra,
  });
  return sftp;
}

/** The ssh2 connection under an sftp session (ssh2-sftp-client keeps it as `client`). */
function sshOf(sftp: SftpClient): { forwardOut(srcIp: string, srcPort: number, dstIp: string, dstPort: number, cb: (err: Error | undefined, channel: Duplex) => void): void; setNoDelay(on: boolean): void } {
  return (sftp as unknown as { client: ReturnType<typeof sshOf> }).client;
}

/** A channel through the peer's sshd to a port on its loopback (what its PermitOpen allows). */
export function forwardedChannel(sftp: SftpClient, port: number): Promise<Duplex> {
  return new Promise((resolve, reject) => sshOf(sftp).forwardOut('127.0.0.1', 0, '127.0.0.1', port, (err, channel) => (err ? reject(err) : resolve(channel))));
}

/** Small messages answered one at a time go out at once instead of waiting for Nagle's algorithm. */
export function sendWithoutDelay(sftp: SftpClient): void {
  sshOf(sftp).setNoDelay(true);
}

async function connect(endpoint: TransferEndpoint, privateKeyPath: string): Promise<Session> {
  return { sftp: await connectPeer(endpoint, privateKeyPath), users: 0 };
}

/** Drops a session from the cache, unless a newer one has taken its place already. */
function forget(key: string, entry: Promise<Session>): void {
  if (sessions.get(key) === entry) sessions.delete(key);
}

function close(key: string, entry: Promise<Session>, session: Session): void {
  forget(key, entry);
  clearTimeout(session.idleTimer);
  void session.sftp.end().catch(() => undefined);
}

/** Runs `use` with an open session to the endpoint; a failure or an abort closes the session for good. */
export async function withSftp<T>(endpoint: TransferEndpoint, privateKeyPath: string, signal: AbortSignal, use: (sftp: SftpClient) => Promise<T>): Promise<T> {
  const key = `${endpoint.username}@${endpoint.host}:${endpoint.port}#${endpoint.hostKeySha256}`;
  let entry = sessions.get(key);
  if (!entry) {
    const created = connect(endpoint, privateKeyPath);
    sessions.set(key, created);
    created.then(
      (session) => session.sftp.on('close', () => forget(key, created)),
      () => forget(key, created),
    );
    entry = created;
  }
  const opened = entry;
  const session = await opened;
  session.users++;
  clearTimeout(session.idleTimer);
  // A given-up attempt (cancelled, stalled, superseded) stops its upload at once.
  const onAbort = () => close(key, opened, session);
  if (signal.aborted) onAbort();
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    const result = await use(session.sftp);
    signal.removeEventListener('abort', onAbort);
    session.users--;
    if (session.users === 0) {
      session.idleTimer = setTimeout(() => close(key, opened, session), IDLE_CLOSE_MS);
      session.idleTimer.unref();
    }
    return result;
  } catch (err) {
    signal.removeEventListener('abort', onAbort);
    session.users--;
    close(key, opened, session);
    throw err;
  }
}
