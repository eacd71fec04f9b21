/**
 * The stretched networks' way across the WAN: every pair of embedded clouds is joined by a
 * WireGuard tunnel (authenticated and encrypted: Curve25519 keys plus a preshared key made for
 * that pair only), and the VXLAN of every stretched network runs inside it. This kernel has TUN
 * but no WireGuard module, so each tunnel end is a user-space wireguard-go process in the cloud's
 * edge namespace. Plain VXLAN arriving on the WAN is dropped: nobody on the WAN can read the
 * private networks' frames or inject one.
 *
 *   <cloud dir>/wan-keys/<peer>.key   this cloud's private key for its tunnel to <peer> (0600)
 *   <cloud dir>/wan-keys/<peer>.psk   the pair's preshared key (each cloud holds a copy, 0600)
 *   <cloud dir>/wan-tunnels.log       what the tunnels' wireguard-go processes say
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ip, run } from '../../lib/exec';
import { startService, stopPid, waitFor } from '../../lib/processes';
import type { LocalCloudConfig, WanTunnel } from './cloud-config';

/** A cloud's tunnel for the peer with testbed index i listens on this port + i. */
export const WAN_TUNNEL_BASE_PORT = 51820;
/** VXLAN's UDP port: inside the tunnels only. */
export const VXLAN_PORT = 4789;
/**
 * Room for the VXLAN frames of any network a VI may declare (MTU up to 9000, +50 for VXLAN). A
 * tunnel packet larger than the WAN's MTU is fragmented by the sending edge's kernel: networks of
 * MTU ≤ 1390 (the default, lib/vi-spec.ts) avoid that: the WAN's 1500 less WireGuard's 60 and VXLAN's 50.
 */
const TUNNEL_MTU = 9050;
const WAN_GUARD_TABLE = 'migravi_wan_guard';

/** Cloud i's address inside every tunnel (link-local: never routed beyond a tunnel's two ends). */
export function tunnelAddress(cloudIndex: number): string {
  return `169.254.77.${10 + cloudIndex}`;
}

/** Interface names are machine-wide for wireguard-go (its control socket is /var/run/wireguard/<name>.sock): named after testbed, cloud and peer. */
export function tunnelInterfaceName(testbedId: string, cloud: string, peer: string): string {
  return `mvw${createHash('sha256').update(`${testbedId}/${cloud}/${peer}`).digest('hex').slice(0, 10)}`;
}

function controlSocket(iface: string): string {
  return `/var/run/wireguard/${iface}.sock`;
}

async function makeKey(file: string, kind: 'genkey' | 'genpsk'): Promise<void> {
  if (existsSync(file)) return;
  const { stdout } = await run('wg', [kind]);
  await writeFile(file, stdout, { mode: 0o600 });
}

async function publicKeyOf(privateKeyFile: string): Promise<string> {
  return (await run('wg', ['pubkey'], { input: await readFile(privateKeyFile, 'utf8') })).stdout.trim();
}

/**
 * Keys for every pair, then one wireguard-go per cloud and peer, configured and up; the clouds'
 * configurations get `wanTunnels` and `stretchAddress`. Returns the processes started (the
 * testbed stops them by PID). A failure stops what this call started before it throws.
 */
export async function setUpWanTunnels(clouds: LocalCloudConfig[], wireguardGo: string): Promise<Array<{ name: string; pid: number }>> {
  if (!existsSync(wireguardGo)) throw new Error(`wireguard-go is not installed at ${wireguardGo}: run scripts/setup.sh (or bring the testbed up with a plain stretch)`);
  for (const [i, cfg] of clouds.entries()) {
    const dir = path.join(cfg.dir, 'wan-keys');
    await mkdir(dir, { recursive: true, mode: 0o700 });
    for (const [j, peer] of clouds.entries()) {
      if (j === i) continue;
      await makeKey(path.join(dir, `${peer.name}.key`), 'genkey');
      // The pair's preshared key is made by the first of the two and copied to the other.
      const psk = path.join(dir, `${peer.name}.psk`);
      if (i < j) await makeKey(psk, 'genpsk');
      else if (!existsSync(psk)) await copyFile(path.join(peer.dir, 'wan-keys', `${cfg.name}.psk`), psk);
    }
  }
  const started: Array<{ name: string; pid: number }> = [];
  const threads = Math.max(1, Math.floor(os.availableParallelism() / (clouds.length * (clouds.length - 1))));
  try {
    for (const [i, cfg] of clouds.entries()) {
      cfg.stretchAddress = tunnelAddress(i);
      cfg.wanTunnels = {};
      for (const [j, peer] of clouds.entries()) {
        if (j === i) continue;
        const tunnel: WanTunnel = {
          interface: tunnelInterfaceName(cfg.testbedId, cfg.name, peer.name),
          peerPublicIp: peer.publicIp,
          localAddress: tunnelAddress(i),
          peerAddress: tunnelAddress(j),
          listenPort: WAN_TUNNEL_BASE_PORT + j,
        };
        const pid = await startTunnel(cfg, tunnel, wireguardGo, threads);
        started.push({ name: `wireguard-go ${cfg.name} to ${peer.name}`, pid });
        const keys = path.join(cfg.dir, 'wan-keys');
        await run('wg', ['set', tunnel.interface, 'listen-port', String(tunnel.listenPort), 'private-key', path.join(keys, `${peer.name}.key`),
          'peer', await publicKeyOf(path.join(peer.dir, 'wan-keys', `${cfg.name}.key`)),
          'preshared-key', path.join(keys, `${peer.name}.psk`),
          'endpoint', `${peer.publicIp}:${WAN_TUNNEL_BASE_PORT + i}`,
          // Any inner source: besides VXLAN between the tunnel addresses, the replies of a drained public
          // connection cross it with their container's address (one peer per interface, so routing is ours).
          'allowed-ips', '0.0.0.0/0'], { netns: cfg.netns });
        await ip(['addr', 'add', tunnel.localAddress, 'peer', tunnel.peerAddress, 'dev', tunnel.interface], cfg.netns);
        await ip(['link', 'set', tunnel.interface, 'mtu', String(TUNNEL_MTU), 'up'], cfg.netns);
        cfg.wanTunnels[peer.name] = tunnel;
      }
      await guardWan(cfg);
    }
  } catch (err) {
    for (const proc of started) await stopPid(proc.pid);
    throw err;
  }
  return started;
}

async function startTunnel(cfg: LocalCloudConfig, tunnel: WanTunnel, wireguardGo: string, threads: number): Promise<number> {
  // A socket left by a process that was killed would pass for the new one's.
  await rm(controlSocket(tunnel.interface), { force: true });
  const pid = await startService({
    name: `wireguard-go (${cfg.name}'s tunnel ${tunnel.interface})`,
    argv: ['nsenter', `--net=/run/netns/${cfg.netns}`, wireguardGo, '--foreground', tunnel.interface],
    logFile: path.join(cfg.dir, 'wan-tunnels.log'),
    // Every cloud's tunnel ends share this machine's cores: each gets its share (on 2 cores and 2
    // tunnel ends, one thread each moved 347 Mbit/s where two moved 241: bench/stretch.ts).
    env: { ...process.env, GOMAXPROCS: String(threads) },
    timeoutMs: 10_000,
  });
  try {
    await waitFor(`wireguard-go's control socket for ${tunnel.interface}`, () => existsSync(controlSocket(tunnel.interface)), 10_000);
  } catch (err) {
    await stopPid(pid);
    throw err;
  }
  return pid;
}

/** VXLAN listens on every address: plain VXLAN from the WAN (frames injected from outside) is dropped before it reaches it. */
async function guardWan(cfg: LocalCloudConfig): Promise<void> {
  await run('nft', ['delete', 'table', 'inet', WAN_GUARD_TABLE], { netns: cfg.netns, allowFailure: true });
  await run('nft', ['-f', '-'], {
    netns: cfg.netns,
    input: `table inet ${WAN_GUARD_TABLE} {\n  chain in {\n    type filter hook input priority 0; policy accept;\n    iifname "wan0" udp dport ${VXLAN_PORT} drop\n  }\n}\n`,
  });
}

/** wireguard-go removes its control socket when stopped, not when killed: what a crash left behind. */
export async function removeTunnelSockets(clouds: LocalCloudConfig[]): Promise<void> {
  for (const cloud of clouds) {
    for (const tunnel of Object.values(cloud.wanTunnels ?? {})) await rm(controlSocket(tunnel.interface), { force: true });
  }
}
