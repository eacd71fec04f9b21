/**
 * Who may push artifacts into an embedded cloud, and where: each peer cloud logs in to this
 * cloud's sshd as an unprivileged account of its own, with a key made for this pair of clouds
 * only, and is chrooted to its inbox (internal-sftp: no shell, no links). The worker (root)
 * reads what arrives there only through its own checks. Root may not log in at all.
 *
 *   <cloud dir>/inbox/<account>/            root 0755: the chroot
 *   <cloud dir>/inbox/<account>/incoming/   the account's, 0700: what the peer may write
 *   <cloud dir>/transfer-keys/<peer>        this cloud's private key for pushing to <peer>
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, chown, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { run } from '../../lib/exec';
import type { LocalCloudConfig, PeerInbox } from './cloud-config';

/** Accounts are machine-wide (every cloud's sshd shares /etc/passwd): named after testbed, cloud and peer. */
export function peerAccountName(testbedId: string, cloud: string, peer: string): string {
  return `mv${createHash('sha256').update(`${testbedId}/${cloud}/${peer}`).digest('hex').slice(0, 10)}`;
}

async function ensureAccount(name: string, comment: string): Promise<{ uid: number; gid: number }> {
  const ids = async () => {
    const { stdout, exitCode } = await run('id', ['-u', name], { allowFailure: true });
    if (exitCode !== 0) return undefined;
    return { uid: Number(stdout.trim()), gid: Number((await run('id', ['-g', name])).stdout.trim()) };
  };
  const existing = await ids();
  if (existing) return existing;
  // Password "*": none can match, yet the account is not locked ("!"), which sshd without PAM refuses even for keys.
  await run('useradd', ['--system', '--user-group', '--no-create-home', '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin', '--password', '*', '--comment', comment, name]);
  return (await ids())!;
}

/**
 * Makes every cloud's inbox for every other cloud (account, chroot, authorized key) and every
 * cloud's key for every peer. Returns the clouds' configurations with `inboxes` and `transferKeys` filled in.
 */
export async function setUpPeerTransfers(clouds: LocalCloudConfig[]): Promise<LocalCloudConfig[]> {
  // Keys first: cloud A's key for B is what B's inbox for A authorizes.
  for (const cfg of clouds) {
    const dir = path.join(cfg.dir, 'transfer-keys');
    await mkdir(dir, { recursive: true, mode: 0o700 });
    cfg.transferKeys = {};
    for (const peer of clouds.filter((c) => c.name !== cfg.name)) {
      const key = path.join(dir, peer.name);
      if (!existsSync(key)) await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `migravi-${cfg.name}-to-${peer.name}`, '-f', key]);
      cfg.transferKeys[peer.name] = key;
    }
  }
  for (const cfg of clouds) {
    const inboxes: Record<string, PeerInbox> = {};
    const authorized = path.join(cfg.dir, 'authorized-keys');
    await mkdir(authorized, { recursive: true, mode: 0o755 });
    for (const peer of clouds.filter((c) => c.name !== cfg.name)) {
      const account = peerAccountName(cfg.testbedId, cfg.name, peer.name);
      const { uid, gid } = await ensureAccount(account, `MigraVI, ${peer.name} pushing into ${cfg.name} (testbed ${cfg.testbedId})`);
      // sshd's chroot: root's, writable by nobody else, on a path of root's directories only.
      const chroot = path.join(cfg.dir, 'inbox', account);
      await mkdir(path.join(chroot, 'incoming'), { recursive: true });
      await chmod(path.join(cfg.dir, 'inbox'), 0o755);
      await chmod(chroot, 0o755);
      await chown(path.join(chroot, 'incoming'), uid, gid);
      await chmod(path.join(chroot, 'incoming'), 0o700);
      const publicKey = (await readFile(`${peer.transferKeys![cfg.name]}.pub`, 'utf8')).trim();
      await writeFile(path.join(authorized, account), `${publicKey}\n`, { mode: 0o644 });
      inboxes[peer.name] = { account, uid, gid, chroot };
    }
    cfg.inboxes = inboxes;
  }
  return clouds;
}

/** The sshd configuration lines that confine each peer to its inbox. */
export function peerSshdConfig(cfg: LocalCloudConfig, forwardable: string): string[] {
  const inboxes = Object.values(cfg.inboxes ?? {});
  return [
    inboxes.length ? `AllowUsers ${inboxes.map((i) => i.account).join(' ')}` : 'DenyUsers *',
    `AuthorizedKeysFile ${path.join(cfg.dir, 'authorized-keys', '%u')}`,
    'PermitRootLogin no',
    ...inboxes.flatMap((inbox) => [
      `Match User ${inbox.account}`,
      `  ChrootDirectory ${inbox.chroot}`,
      // Only files: a link made by the peer would point the root worker elsewhere. Files it writes are its own (0600).
      '  ForceCommand internal-sftp -u 0077 -P symlink,hardlink',
      '  AllowTcpForwarding local',
      `  PermitOpen ${forwardable}`,
    ]),
  ];
}

/** Removes the accounts a testbed made (machine-wide): every pair of its clouds' names (an `up` cut short included). */
export async function removePeerAccounts(testbedId: string, clouds: string[], log: (line: string) => void): Promise<void> {
  for (const cloud of clouds) {
    for (const peer of clouds.filter((c) => c !== cloud)) {
      const account = peerAccountName(testbedId, cloud, peer);
      if ((await run('id', ['-u', account], { allowFailure: true })).exitCode !== 0) continue;
      const { exitCode, stderr } = await run('userdel', [account], { allowFailure: true });
      log(exitCode === 0 ? `removed account ${account} (${peer} into ${cloud})` : `could not remove account ${account}: ${stderr.trim()}`);
    }
  }
}
