import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, rm, rmdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ip, run } from '../../lib/exec';
import { readPidFile, stopPid, waitFor } from '../../lib/processes';
import { wireguardGoPath } from '../../lib/paths';
import { cidrsOverlap, intToIp, parseCidr } from '../../lib/vi-spec';
import { cloudConfigPath, IMAGE_STREAM_PORT, PAGE_SERVER_PORTS, type LocalCloudConfig } from './cloud-config';
import { memoryDirOf } from './local-cloud';
import { startDnsServer } from './dns-server';
import { hostConflicts, linkEnds, readHostNetworkFacts } from './host-ranges';
import { killHeldDump } from '../runtime/lazy-dump';
import { peerSshdConfig, removePeerAccounts, setUpPeerTransfers } from './peer-transfers';
import { removeTunnelSockets, setUpWanTunnels } from './wan-tunnels';

/**
 * The embedded testbed: several "clouds" on this machine, each an edge network namespace with a
 * public address on a shared WAN, sshd for transfers, and its containers' namespaces. The WAN is a
 * bridge in a namespace of its own (the testbed's "Internet"), with no uplink: nothing a test
 * sends leaves the machine, and the WAN's addresses never enter the host's routing table (where
 * they could shadow addresses the host itself uses, PLATFORM.md). One small link joins the WAN
 * namespace to the host, masqueraded, so the clouds' workers reach the Temporal server there.
 */
export interface TestbedOptions {
  /** Prefix of every namespace, link and cgroup created (tests and the demo use different ones). */
  id: string;
  stateDir: string;
  clouds: string[];
  /** The WAN router's address (in the WAN namespace); clouds get gateway+10, +11, … */
  wanGateway: string;
  /**
   * The link between the host and the WAN namespace (a /30 or larger, default 198.18.0.0/30):
   * the only range a testbed adds to the host. Refused when it overlaps an address, a route or
   * a resolver of the host.
   */
  hostLink?: string;
  /** Zones the first cloud's DNS service serves (default: vi.example.). */
  dnsZones?: string[];
  wanPrefixLength: number;
  /** Bandwidth of each cloud's WAN link, both directions (tbf). */
  wanRateMbit: number;
  criuPath: string;
  /**
   * How stretched networks cross the WAN: inside a WireGuard tunnel per pair of clouds (the
   * default), or as plain VXLAN, readable and injectable by anyone on the WAN (the benchmark's
   * baseline for the encryption's cost).
   */
  stretch?: 'wireguard' | 'plain';
}

export interface TestbedRecord {
  options: TestbedOptions;
  /** "The Internet": a namespace on the WAN where outside users of the VIs live (tests, demo clients). */
  outside: { netns: string; ip: string };
  /** Where the clouds reach the host (its end of the host link): the Temporal server's address for workers. */
  hostAddress: string;
  clouds: LocalCloudConfig[];
  /**
   * A cloud whose worker opens another configuration than its embedded one (an OpenStack project
   * whose host is this cloud's edge): the file, by cloud name.
   */
  cloudConfigs?: Record<string, string>;
  /** Every long-running process this testbed started, so `down` stops exactly those. */
  processes: Array<{ name: string; pid: number }>;
}

export function testbedFile(stateDir: string): string {
  return path.join(stateDir, 'testbed.json');
}

export async function readTestbed(stateDir: string): Promise<TestbedRecord | undefined> {
  try {
    return JSON.parse(await readFile(testbedFile(stateDir), 'utf8')) as TestbedRecord;
  } catch {
    return undefined;
  }
}

async function writeTestbed(record: TestbedRecord): Promise<void> {
  await writeFile(testbedFile(record.options.stateDir), JSON.stringify(record, null, 2));
}

/** Remembers a process (a worker, a client) so `down` stops it even if its starter died. */
export async function registerProcess(stateDir: string, name: string, pid: number): Promise<void> {
  const record = await readTestbed(stateDir);
  if (!record) throw new Error(`no testbed in ${stateDir}`);
  record.processes.push({ name, pid });
  await writeTestbed(record);
}

/** Has a cloud's worker open `file` (another provider's configuration) instead of its embedded one. */
export async function setCloudConfig(stateDir: string, cloud: string, file: string): Promise<TestbedRecord> {
  const record = await readTestbed(stateDir);
  if (!record) throw new Error(`no testbed in ${stateDir}`);
  if (!record.clouds.some((c) => c.name === cloud)) throw new Error(`no cloud ${cloud} in testbed ${record.options.id}`);
  record.cloudConfigs = { ...record.cloudConfigs, [cloud]: file };
  await writeTestbed(record);
  return record;
}

/** Forgets a process that was stopped, so `down` never signals a PID the system may have reused. */
export async function unregisterProcess(stateDir: string, pid: number): Promise<void> {
  const record = await readTestbed(stateDir);
  if (!record) return;
  record.processes = record.processes.filter((p) => p.pid !== pid);
  await writeTestbed(record);
}

export function addToIpv4(address: string, n: number): string {
  const parts = address.split('.').map(Number);
  const value = ((parts[0]! << 24) >>> 0) + (parts[1]! << 16) + (parts[2]! << 8) + parts[3]! + n;
  return [value >>> 24, (value >>> 16) & 255, (value >>> 8) & 255, value & 255].join('.');
}

export const DEFAULT_HOST_LINK = '198.18.0.0/30';
/** The name the clouds service's supervisor is registered under (providers/local/supervisor.ts). */
export const SUPERVISOR = 'supervisor';
export const DEFAULT_DNS_ZONE = 'vi.example.';

/** Cloud i's floating IPs: the i-th /28 from the WAN's network + 32 (clear of the router, the clouds and the outside world). */
function floatingRangeOf(opts: TestbedOptions, i: number): string {
  const wan = parseCidr(`${opts.wanGateway}/${opts.wanPrefixLength}`)!;
  return `${intToIp(wan.net + 32 + 16 * i)}/28`;
}

/** Checks the options and the ranges against what the host uses, before anything is created. */
async function validate(opts: TestbedOptions): Promise<void> {
  const hostLink = opts.hostLink ?? DEFAULT_HOST_LINK;
  linkEnds(hostLink); // its shape
  const wan = `${opts.wanGateway}/${opts.wanPrefixLength}`;
  const problems = hostConflicts('the host link', hostLink, await readHostNetworkFacts());
  if (!parseCidr(wan)) problems.push(`the WAN ${wan} is not an IPv4 CIDR`);
  else if (cidrsOverlap(wan, hostLink)) problems.push(`the WAN ${wan} overlaps the host link ${hostLink}`);
  if (problems.length) throw new Error(`testbed "${opts.id}" would collide with the host's own network:\n  - ${problems.join('\n  - ')}\n(choose other ranges: --host-link, --wan-gateway)`);
  validateNames(opts);
}

function validateNames(opts: TestbedOptions): void {
  if (opts.wanPrefixLength > 25) throw new Error(`the WAN needs at least a /25 (router, clouds, floating IPs, outside world), got /${opts.wanPrefixLength}`);
  if (opts.clouds.length > 4) throw new Error(`at most 4 clouds fit the WAN's floating-IP ranges, got ${opts.clouds.length}`);
  if (!/^[a-z][a-z0-9]{1,7}$/.test(opts.id)) throw new Error(`testbed id "${opts.id}" must be 2-8 lowercase letters/digits`);
  if (opts.clouds.length < 2) throw new Error('a testbed needs at least two clouds');
  for (const cloud of opts.clouds) {
    if (!/^[a-z][a-z0-9-]{0,15}$/.test(cloud)) throw new Error(`cloud name "${cloud}" must be 1-16 lowercase letters, digits or "-"`);
  }
  if (new Set(opts.clouds).size !== opts.clouds.length) throw new Error('cloud names must be unique');
  if (!(opts.wanRateMbit > 0)) throw new Error(`WAN rate must be positive, got ${opts.wanRateMbit}`);
  if (opts.stretch !== undefined && opts.stretch !== 'wireguard' && opts.stretch !== 'plain') throw new Error(`the stretch is "wireguard" or "plain", got "${String(opts.stretch)}"`);
  if (opts.stretch !== 'plain' && !existsSync(wireguardGoPath)) throw new Error(`wireguard-go (the stretch's encryption) is not installed at ${wireguardGoPath}: run scripts/setup.sh`);
}

async function shapeLink(dev: string, rateMbit: number, netns?: string): Promise<void> {
  // Burst of 10 ms of traffic at the link rate (and never below 64 KiB, or tbf starves at high rates).
  const burstBytes = Math.max(64 * 1024, Math.round((rateMbit * 1e6) / 8 / 100));
  await run('tc', ['qdisc', 'replace', 'dev', dev, 'root', 'tbf', 'rate', `${rateMbit}mbit`, 'burst', String(burstBytes), 'latency', '50ms'], { netns });
}

async function startSshd(cfg: LocalCloudConfig): Promise<number> {
  const dir = cfg.dir;
  const pidFile = path.join(dir, 'sshd.pid');
  await writeFile(
    path.join(dir, 'sshd_config'),
    [
      `ListenAddress ${cfg.publicIp}`,
      `Port ${cfg.sshPort}`,
      `HostKey ${cfg.sshHostKeyPath}`,
      `PidFile ${pidFile}`,
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'UsePAM no',
      'StrictModes no',
      'Subsystem sftp internal-sftp',
      // Peers may only push files, stream images to this cloud's worker and fetch post-copy pages
      // from its page servers: no shell, no commands, no other tunnel.
      'ForceCommand internal-sftp',
      'AllowTcpForwarding no',
      // Every member of a post-copy group opens its page source's connection at the same moment
      // (16 at once in the benchmark): sshd's default (10:30:100) dropped some of those handshakes.
      'MaxStartups 64:30:256',
      // A peer gone silent (a cut link) is dropped within seconds, with what it had open.
      'ClientAliveInterval 2',
      'ClientAliveCountMax 3',
      'AllowAgentForwarding no',
      'X11Forwarding no',
      'PermitTTY no',
      // Each peer as its own unprivileged account, chrooted to its inbox (Match blocks go last).
      ...peerSshdConfig(cfg, [IMAGE_STREAM_PORT, ...PAGE_SERVER_PORTS].map((port) => `127.0.0.1:${port}`).join(' ')),
      '',
    ].join('\n'),
  );
  await mkdir('/run/sshd', { recursive: true, mode: 0o755 });
  await rm(pidFile, { force: true });
  // sshd daemonizes and writes its PID file once it listens: that file is the readiness signal.
  await run('/usr/sbin/sshd', ['-f', path.join(dir, 'sshd_config'), '-E', path.join(dir, 'sshd.log')], { netns: cfg.netns });
  let pid: number | undefined;
  await waitFor(`sshd of ${cfg.name}`, async () => (pid = await readPidFile(pidFile)) !== undefined, 10_000);
  return pid!;
}

/** Changes the bandwidth of one cloud's WAN link, both directions (e.g. to emulate a slow link). */
export async function setWanRate(record: TestbedRecord, cloud: string, rateMbit: number): Promise<void> {
  const index = record.clouds.findIndex((c) => c.name === cloud);
  if (index < 0) throw new Error(`no cloud ${cloud} in testbed ${record.options.id}`);
  await shapeLink('wan0', rateMbit, record.clouds[index]!.netns);
  await shapeLink(`w${index}`, rateMbit, wanNamespace(record.options.id));
}

/** Files `ip netns exec` uses in the outside world's namespace (its resolv.conf). */
function outsideEtc(id: string): string {
  return path.join('/etc/netns', `${id}-out`);
}

/** The WAN's namespace: the testbed's "Internet" between the clouds. */
export function wanNamespace(id: string): string {
  return `${id}-wan`;
}

/** Brings the clouds up. Refuses to touch a testbed that is already up: tear it down first. */
export async function testbedUp(opts: TestbedOptions, log: (line: string) => void = () => {}): Promise<TestbedRecord> {
  await validate(opts);
  if (await readTestbed(opts.stateDir)) {
    throw new Error(`testbed "${opts.id}" is already up (${testbedFile(opts.stateDir)} exists); tear it down first`);
  }
  const wanNs = wanNamespace(opts.id);
  const hostVeth = `${opts.id}-up`;
  if (existsSync(`/run/netns/${wanNs}`) || (await ip(['link', 'show', hostVeth], undefined, true)).exitCode === 0) {
    throw new Error(`namespace ${wanNs} or link ${hostVeth} already exists but no testbed record does: run the testbed's down command to clean up`);
  }
  const hostLink = opts.hostLink ?? DEFAULT_HOST_LINK;
  const ends = linkEnds(hostLink);
  await mkdir(opts.stateDir, { recursive: true });
  const outside = { netns: `${opts.id}-out`, ip: addToIpv4(opts.wanGateway, 99) };
  const record: TestbedRecord = { options: opts, hostAddress: ends.host, outside, clouds: [], processes: [] };
  await writeTestbed(record);

  log(`WAN ${opts.wanGateway}/${opts.wanPrefixLength} in namespace ${wanNs}, ${opts.wanRateMbit} Mbit/s per cloud link; host link ${hostLink} (host ${ends.host})`);
  await ip(['netns', 'add', wanNs]);
  await ip(['link', 'set', 'lo', 'up'], wanNs);
  await ip(['link', 'add', 'wan', 'type', 'bridge'], wanNs);
  await ip(['addr', 'add', `${opts.wanGateway}/${opts.wanPrefixLength}`, 'dev', 'wan'], wanNs);
  await ip(['link', 'set', 'wan', 'up'], wanNs);
  // The host link, masqueraded: the host sees only its /30, never the WAN's addresses.
  await ip(['link', 'add', hostVeth, 'type', 'veth', 'peer', 'name', 'up0', 'netns', wanNs]);
  await ip(['addr', 'add', `${ends.host}/${ends.prefix}`, 'dev', hostVeth]);
  await ip(['link', 'set', hostVeth, 'up']);
  await ip(['addr', 'add', `${ends.wan}/${ends.prefix}`, 'dev', 'up0'], wanNs);
  await ip(['link', 'set', 'up0', 'up'], wanNs);
  await run('sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1'], { netns: wanNs });
  await run('nft', ['-f', '-'], {
    netns: wanNs,
    input: 'table ip migravi_nat {\n  chain post {\n    type nat hook postrouting priority 100;\n    oifname "up0" masquerade\n  }\n}\n',
  });

  for (const [i, name] of opts.clouds.entries()) {
    const dir = path.join(opts.stateDir, 'clouds', name);
    await mkdir(dir, { recursive: true });
    const cfg: LocalCloudConfig = {
      provider: 'local',
      name,
      testbedId: opts.id,
      netns: `${opts.id}-${name}`,
      publicIp: addToIpv4(opts.wanGateway, 10 + i),
      floatingRange: floatingRangeOf(opts, i),
      dir,
      sshPort: 22,
      sshHostKeyPath: path.join(dir, 'ssh_host_ed25519_key'),
      transferKeyPath: path.join(dir, 'transfer_key'),
      criuPath: opts.criuPath,
    };
    log(`cloud ${name}: namespace ${cfg.netns}, public ${cfg.publicIp}`);
    const wanPort = `w${i}`;
    await ip(['netns', 'add', cfg.netns]);
    await ip(['link', 'add', wanPort, 'type', 'veth', 'peer', 'name', 'wan0', 'netns', cfg.netns], wanNs);
    await ip(['link', 'set', wanPort, 'master', 'wan', 'up'], wanNs);
    await ip(['addr', 'add', `${cfg.publicIp}/${opts.wanPrefixLength}`, 'dev', 'wan0'], cfg.netns);
    await ip(['link', 'set', 'lo', 'up'], cfg.netns);
    await ip(['link', 'set', 'wan0', 'up'], cfg.netns);
    // The host (Temporal) is reached through the WAN's router.
    await ip(['route', 'add', hostLink, 'via', opts.wanGateway], cfg.netns);
    // The edge routes between the WAN and the VIs' networks for floating IPs (its nftables decide what may pass).
    // (Drained replies come back in and leave through wan0: no redirects, no reverse-path filter.)
    await run('sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1', 'net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.default.rp_filter=0', 'net.ipv4.conf.all.send_redirects=0', 'net.ipv4.conf.default.send_redirects=0'], { netns: cfg.netns });
    await shapeLink('wan0', opts.wanRateMbit, cfg.netns);
    await shapeLink(wanPort, opts.wanRateMbit, wanNs);
    for (const key of [cfg.sshHostKeyPath, cfg.transferKeyPath]) {
      if (!existsSync(key)) await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `migravi-${name}`, '-f', key]);
    }
    await writeFile(cloudConfigPath(opts.stateDir, name), JSON.stringify(cfg, null, 2));
    record.clouds.push(cfg);
    await writeTestbed(record);
  }

  // The outside world: one address on the WAN, standing for the VIs' users on the Internet.
  await ip(['netns', 'add', outside.netns]);
  await ip(['link', 'add', 'out', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', outside.netns], wanNs);
  await ip(['link', 'set', 'out', 'master', 'wan', 'up'], wanNs);
  await ip(['addr', 'add', `${outside.ip}/${opts.wanPrefixLength}`, 'dev', 'eth0'], outside.netns);
  await ip(['link', 'set', 'lo', 'up'], outside.netns);
  await ip(['link', 'set', 'eth0', 'up'], outside.netns);
  log(`outside world: namespace ${outside.netns}, ${outside.ip}`);

  // Every cloud accepts transfers from every other cloud: each as its own account, key and chroot.
  await setUpPeerTransfers(record.clouds);
  await writeTestbed(record);
  // Every pair of clouds is joined by a WireGuard tunnel that their stretched networks cross the WAN in.
  if (opts.stretch !== 'plain') {
    const tunnels = await setUpWanTunnels(record.clouds, wireguardGoPath);
    record.processes.push(...tunnels);
    await writeTestbed(record);
    log(`WAN tunnels (WireGuard, a key pair and a preshared key per pair of clouds): ${tunnels.map((t) => `${t.name} (pid ${t.pid})`).join(', ')}`);
  } else {
    log('stretch: plain VXLAN on the WAN (unencrypted)');
  }
  for (const cfg of record.clouds) {
    await writeFile(cloudConfigPath(opts.stateDir, cfg.name), JSON.stringify(cfg, null, 2));
    const pid = await startSshd(cfg);
    record.processes.push({ name: `sshd ${cfg.name}`, pid });
    await writeTestbed(record);
    log(`cloud ${cfg.name}: sshd on ${cfg.publicIp}:${cfg.sshPort} (pid ${pid})`);
  }

  // The first cloud offers DNS: its PowerDNS serves the VIs' public names.
  const dnsCloud = record.clouds[0]!;
  const zones = opts.dnsZones ?? [DEFAULT_DNS_ZONE];
  const dnsServer = await startDnsServer(dnsCloud, zones);
  record.processes.push({ name: `PowerDNS ${dnsCloud.name}`, pid: dnsServer.pid });
  dnsCloud.dns = dnsServer.dns;
  await writeFile(cloudConfigPath(opts.stateDir, dnsCloud.name), JSON.stringify(dnsCloud, null, 2));
  await writeTestbed(record);
  log(`cloud ${dnsCloud.name}: PowerDNS on ${dnsServer.dns.server}:53 serving ${zones.join(', ')} (pid ${dnsServer.pid})`);
  // The outside world's resolver is that server (`ip netns exec` binds this file over /etc/resolv.conf).
  await mkdir(outsideEtc(opts.id), { recursive: true });
  await writeFile(path.join(outsideEtc(opts.id), 'resolv.conf'), `nameserver ${dnsServer.dns.server}\n`);
  return record;
}

/**
 * Removes everything the testbed created: its processes (by recorded PID), containers, namespaces,
 * links, cgroups and state. Safe to run twice, and after a crash half-way through `up`.
 */
export async function testbedDown(stateDir: string, idHint?: string, log: (line: string) => void = () => {}): Promise<void> {
  const record = await readTestbed(stateDir);
  const id = record?.options.id ?? idHint;
  if (!id) {
    log(`no testbed in ${stateDir}`);
    return;
  }
  // The supervisor first (it would restart the workers stopped after it), then the rest, newest first.
  const processes = [...(record?.processes ?? [])].reverse();
  for (const proc of [...processes.filter((p) => p.name === SUPERVISOR), ...processes.filter((p) => p.name !== SUPERVISOR)]) {
    await stopPid(proc.pid);
  }
  await removeTunnelSockets(record?.clouds ?? []);
  for (const cloud of record?.clouds ?? []) {
    const runcRoot = path.join(cloud.dir, 'runc');
    // A post-copy dump left holding its processes (a migration cut short) ends first.
    const bundles = path.join(cloud.dir, 'containers');
    for (const name of existsSync(bundles) ? await readdir(bundles) : []) await killHeldDump(path.join(bundles, name, 'held-dump.pid'));
    if (existsSync(runcRoot)) {
      for (const container of (await run('runc', ['--root', runcRoot, 'list', '-q'], { allowFailure: true })).stdout.split('\n').filter(Boolean)) {
        await run('runc', ['--root', runcRoot, 'delete', '--force', container], { allowFailure: true });
        log(`removed container ${container} of ${cloud.name}`);
      }
    }
  }
  // Delete our links in the host explicitly: the kernel frees a deleted namespace's links
  // asynchronously. (`${id}-w<n>` and the bridge `${id}-wan` are those of testbeds made before
  // the WAN had its own namespace.)
  for (const link of (await ip(['-o', 'link', 'show'])).stdout.split('\n')) {
    const name = link.split(': ')[1]?.split('@')[0];
    if (name === `${id}-up` || (name?.startsWith(`${id}-w`) && name !== `${id}-wan`)) await ip(['link', 'del', name], undefined, true);
  }
  const namespaces = (await ip(['netns', 'list'])).stdout
    .split('\n')
    .map((line) => line.split(' ')[0]!)
    .filter((ns) => ns.startsWith(`${id}-`));
  // Container namespaces first (their veths live in the edge namespaces), then the edges.
  namespaces.sort((a, b) => b.length - a.length);
  for (const ns of namespaces) await ip(['netns', 'del', ns], undefined, true);
  if (namespaces.length) log(`removed namespaces ${namespaces.join(', ')}`);
  await ip(['link', 'del', `${id}-wan`], undefined, true);
  await removeCgroups(id);
  await removePeerAccounts(id, [...(record?.clouds.map((c) => c.name) ?? []), ...(record?.options.clouds ?? [])].filter((c, i, all) => all.indexOf(c) === i), log);
  for (const cloud of record?.clouds ?? []) await rm(memoryDirOf({ testbedId: id, name: cloud.name }), { recursive: true, force: true });
  await rm(outsideEtc(id), { recursive: true, force: true });
  await rm(stateDir, { recursive: true, force: true });
  log(`testbed "${id}" is down`);
}

/** runc removes a container's cgroup but not the parents named after the testbed. */
async function removeCgroups(id: string): Promise<void> {
  const root = '/sys/fs/cgroup';
  const hierarchies = (await readdir(root).catch(() => [] as string[])).map((h) => path.join(root, h));
  for (const base of [root, ...hierarchies]) {
    const top = path.join(base, id);
    if (!existsSync(top)) continue;
    for (const child of await readdir(top, { withFileTypes: true })) {
      if (child.isDirectory()) await rmdir(path.join(top, child.name)).catch(() => undefined);
    }
    await rmdir(top).catch(() => undefined);
  }
}
