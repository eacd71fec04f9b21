/**
 * Post-copy, destination: the way from CRIU's lazy-pages daemon to the source's page server. The
 * daemon connects to a listener on this worker's loopback; each connection rides an SSH channel
 * to the source's sshd, which opens it only to its page-server ports (PermitOpen) — the same
 * authenticated, encrypted path as the image stream, in the other direction.
 *
 * The daemon connects only once it has received every restored process's userfaultfd, and
 * fetches nothing before that connection: `beforeFirstByte` lets the guard take hold of them all
 * right then, so no page is ever copied in while a loss of the daemon could still read as zeros.
 */
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type SftpClient from 'ssh2-sftp-client';
import type { TransferEndpoint } from '../lib/types';
import { connectPeer, forwardedChannel, sendWithoutDelay } from './sftp-sessions';

interface Forward {
  server: net.Server;
  /** The SSH connection the daemon's connections ride; replaced when its handshake failed. */
  ssh: Promise<SftpClient>;
  port: number;
  /** The daemon's requests wait (see holdPageForward). */
  held: boolean;
  /** The daemon's connections, each with the way to resume its requests. */
  links: Array<{ local: net.Socket; resume?: () => void }>;
}

const forwards = new Map<string, Forward>();

async function connectSsh(endpoint: TransferEndpoint, privateKeyPath: string): Promise<SftpClient> {
  const ssh = await connectPeer(endpoint, privateKeyPath, {
    // A cut link must end the forward within seconds: CRIU's daemon then loses its source and the guard takes over.
    keepaliveInterval: 1_000,
    keepaliveCountMax: 3,
    // A cipher Node decrypts natively (AES-GCM): pages come in faster.
    algorithms: { cipher: ['aes128-gcm@openssh.com', 'aes256-gcm@openssh.com', 'aes128-ctr'] },
  });
  // Requests are small and answered one at a time: Nagle's algorithm would hold each behind the
  // acknowledgement of the last window adjust.
  sendWithoutDelay(ssh);
  return ssh;
}

/** Handshakes per daemon connection: a peer's sshd drops new connections beyond its MaxStartups when a group's members all connect at once. */
const HANDSHAKE_TRIES = 3;

/** The page server may still be loading its image when the daemon first connects: a few tries (up to ~3 s). */
async function channelWhenListening(ssh: SftpClient, port: number): Promise<Duplex> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await forwardedChannel(ssh, port);
    } catch (err) {
      if (attempt >= 60) throw err;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

/** Opens (once per key) a loopback listener forwarding to the source's page server; returns its local port. */
export async function openPageForward(
  key: string,
  endpoint: TransferEndpoint,
  privateKeyPath: string,
  remotePort: number,
  beforeFirstByte: () => Promise<void>,
  log: (line: string) => void = () => undefined,
): Promise<number> {
  const existing = forwards.get(key);
  if (existing) return existing.port;
  const startSsh = (): Promise<SftpClient> => {
    const ssh = connectSsh(endpoint, privateKeyPath);
    // A broken SSH connection ends the forward: the next attempt opens a new one. A failed
    // handshake does not: the daemon's connection tries again (sshReady).
    ssh.then((client) => client.on('close', () => closePageForward(key, forward))).catch(() => undefined);
    return ssh;
  };
  /**
   * Without its page source the daemon ends, and a restore still under way fails with it (CRIU
   * kills what it restored after unlocking the network): a handshake the peer refused is retried.
   */
  const sshReady = async (): Promise<SftpClient> => {
    for (let attempt = 1; ; attempt++) {
      const ssh = forward.ssh;
      try {
        return await ssh;
      } catch (err) {
        if (attempt >= HANDSHAKE_TRIES) throw err;
        log(`SSH handshake ${attempt} of ${HANDSHAKE_TRIES} to the page source failed (${err instanceof Error ? err.message : String(err)}); trying again`);
        if (forward.ssh === ssh) forward.ssh = startSsh();
      }
    }
  };
  const links: Forward['links'] = [];
  const server = net.createServer((local) => {
    local.pause();
    // Each answer ends in a partial segment: with Nagle's algorithm it waited for the daemon's
    // delayed acknowledgement (40 ms) before the daemon could ask for the next pages.
    local.setNoDelay(true);
    local.on('error', () => undefined);
    void (async () => {
      try {
        await beforeFirstByte();
        const remote = await channelWhenListening(await sshReady(), remotePort);
        remote.on('error', () => local.destroy());
        local.on('close', () => remote.destroy());
        remote.on('close', () => local.destroy());
        remote.pipe(local);
        const link: Forward['links'][number] = { local };
        link.resume = () => {
          local.pipe(remote);
          local.resume();
        };
        links.push(link);
        local.on('close', () => links.splice(links.indexOf(link), 1));
        if (!forward.held) link.resume();
      } catch (err) {
        log(`the lazy-pages daemon's connection to its page source was dropped: ${err instanceof Error ? err.message : String(err)}`);
        local.destroy(); // the daemon sees its page source gone: the guard keeps the memory safe
      }
    })();
  });
  // The SSH handshake (~0.1 s) runs while the restore starts: the daemon connects only later.
  const forward: Forward = { server, ssh: startSsh(), port: 0, held: false, links };
  await new Promise<void>((resolve, reject) => server.listen(0, '127.0.0.1', resolve).once('error', reject));
  forward.port = (server.address() as net.AddressInfo).port;
  forwards.set(key, forward);
  return forward.port;
}

/**
 * The daemon's next requests wait in its socket (the answer under way still arrives): its
 * process runs on what it has and stalls on a missing page until releasePageForward.
 */
export function holdPageForward(key: string): void {
  const forward = forwards.get(key);
  if (!forward || forward.held) return;
  forward.held = true;
  for (const { local } of forward.links) {
    local.unpipe();
    local.pause();
  }
}

export function releasePageForward(key: string): void {
  const forward = forwards.get(key);
  if (!forward?.held) return;
  forward.held = false;
  for (const link of forward.links) link.resume?.();
}

export function closePageForward(key: string, only?: Forward): void {
  const forward = forwards.get(key);
  if (!forward || (only && forward !== only)) return;
  forwards.delete(key);
  forward.server.close();
  void forward.ssh.then((client) => client.end()).catch(() => undefined);
}

/** The source's sshd answered, but nothing listens on the page server's port: it must be started again. */
export class NoPageServer extends Error {}

/**
 * A direct connection to the source's page server (to fill pages the daemon never copied). Fails
 * with NoPageServer when the source is reachable but its page server is gone; any other failure
 * means the source cannot be reached (a cut link, a dead host) and is worth retrying as is.
 */
export async function connectPageServer(endpoint: TransferEndpoint, privateKeyPath: string, remotePort: number): Promise<{ stream: Duplex; close: () => void }> {
  const ssh = await connectSsh(endpoint, privateKeyPath);
  try {
    const stream = await forwardedChannel(ssh, remotePort);
    return { stream, close: () => void ssh.end().catch(() => undefined) };
  } catch (err) {
    void ssh.end().catch(() => undefined);
    throw new NoPageServer(`no page server on ${endpoint.host}'s port ${remotePort}: ${(err as Error).message}`);
  }
}
