import { readFileSync } from 'node:fs';
import path from 'node:path';

/**
 * How one embedded cloud is wired: written by the testbed when it brings the cloud up, read by
 * that cloud's worker. It holds paths to keys, never the keys themselves.
 */
export interface LocalCloudConfig {
  /** Which provider opens this cloud (providers/registry.ts). */
  provider: 'local';
  name: string;
  /** Prefix of every namespace and link this testbed creates (lets tests and the demo coexist). */
  testbedId: string;
  /** The cloud's edge namespace: its WAN address, private bridges, sshd and worker live here. */
  netns: string;
  publicIp: string;
  /** This cloud's floating IPs (CIDR on the WAN): public addresses it can associate with containers. */
  floatingRange: string;
  /** Per-cloud directory: state.json, containers, runc state, artifacts. */
  dir: string;
  sshPort: number;
  sshHostKeyPath: string;
  /** This cloud's key for pushing artifacts to peers (of testbeds made before keys per pair). */
  transferKeyPath: string;
  /** This cloud's private key for pushing to each peer, by peer name (providers/local/peer-transfers.ts). */
  transferKeys?: Record<string, string>;
  /** Where each peer may push into this cloud: its unprivileged account and chroot, by peer name. */
  inboxes?: Record<string, PeerInbox>;
  criuPath: string;
  /**
   * The WireGuard tunnel to each peer, by peer name, that stretched networks cross the WAN in
   * (providers/local/wan-tunnels.ts); absent when the testbed's stretch is plain VXLAN on the WAN.
   */
  wanTunnels?: Record<string, WanTunnel>;
  /** This cloud's address inside its tunnels: the local end of its stretched networks' VXLAN. */
  stretchAddress?: string;
  /** The cloud's DNS service (PowerDNS), when it offers one: where it answers, its API and key. */
  dns?: { server: string; apiUrl: string; apiKeyPath: string };
}

/** A peer's way into this cloud: it logs in as `account`, confined to `chroot`, and writes under its `incoming/`. */
export interface PeerInbox {
  account: string;
  uid: number;
  gid: number;
  chroot: string;
}

/** One end of a pair's WAN tunnel: the local interface and the addresses inside and outside it. */
export interface WanTunnel {
  interface: string;
  /** The peer's address on the WAN (the tunnel's endpoint; the address a stretch names its peer by). */
  peerPublicIp: string;
  localAddress: string;
  peerAddress: string;
  listenPort: number;
}

/** Where a cloud's worker receives streamed images, on its loopback (its sshd forwards peers there). */
export const IMAGE_STREAM_PORT = 7600;
/** Post-copy page servers on the source's loopback (one per container in its window; sshd forwards peers there). */
export const PAGE_SERVER_PORTS = Array.from({ length: 32 }, (_, i) => 7601 + i);

export function cloudConfigPath(stateDir: string, cloud: string): string {
  return path.join(stateDir, 'clouds', cloud, 'cloud.json');
}

export function loadCloudConfig(stateDir: string, cloud: string): LocalCloudConfig {
  const file = cloudConfigPath(stateDir, cloud);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    throw new Error(`cloud "${cloud}" is not set up in ${stateDir} (no ${file}); bring the testbed up first`);
  }
  // Written before configurations named their provider: an embedded cloud.
  return { provider: 'local', ...(JSON.parse(text) as Omit<LocalCloudConfig, 'provider'>) };
}

/** Names of kernel objects; link names are limited to 15 characters. */
export const names = {
  containerNetns: (cfg: LocalCloudConfig, container: string) => `${cfg.netns}-${container}`,
  bridge: (network: string) => `br-${network}`,
  vxlan: (network: string) => `vx-${network}`,
    /** eth0's peer keeps the old name; ethN's is "vN-" + container (container names start with a letter: no clash). */
  hostVeth: (container: string, index = 0) => (index === 0 ? `v-${container}` : `v${index}-${container}`),
};
