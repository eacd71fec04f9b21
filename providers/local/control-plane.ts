import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { chown, mkdir, readFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import path from 'node:path';
import { ip, run } from '../../lib/exec';
import { waitFor } from '../../lib/processes';
import { cidrContains, intToIp, parseCidr } from '../../lib/vi-spec';
import type { CloudEndpoint, ContainerSpec, DnsRecord, IngressRule, NetworkSpec, PublicConnection, TransferEndpoint } from '../../lib/types';
import { PowerDnsApi } from './powerdns-api';
import type { ControlPlane } from '../provider';
import { IMAGE_STREAM_PORT, names, PAGE_SERVER_PORTS, type LocalCloudConfig } from './cloud-config';
import { CloudStateStore } from './cloud-state';
import { VXLAN_PORT } from './wan-tunnels';

const GUARD_TABLE = 'migravi_guard';
const RULES_TABLE = 'migravi_rules';
const EDGE_TABLE = 'migravi_edge';
const DRAIN_TABLE = 'migravi_drain';
/** Drained replies toward peer a.b.c.N carry mark 0x4d00+N and use routing table 4700+N. */
const DRAIN_MARK_BASE = 0x4d00;
const DRAIN_ROUTE_TABLE_BASE = 4700;
const DRAIN_MARK = '& 0xff00 == 0x4d00';
const NOT_DRAIN_MARK = '& 0xff00 != 0x4d00';

function prefixLength(cidr: string): number {
  return Number(cidr.split('/')[1]);
}

/** What a port is built from (interfaces and ingress rules): a recorded port of another shape is rebuilt. */
function portShape(container: ContainerSpec): string {
  return createHash('sha256').update(JSON.stringify([container.interfaces, container.ingress ?? null])).digest('hex').slice(0, 16);
}

/** A network's gateway: its first host address (VI addresses are allocated from .10 up). */
export function gatewayIp(cidr: string): string {
  return intToIp(parseCidr(cidr)!.net + 1);
}

/** The gateway's MAC, derived from the network's VXLAN id: identical in every cloud. */
function gatewayMac(vni: number): string {
  return ['02', '67', ((vni >> 16) & 255).toString(16), ((vni >> 8) & 255).toString(16), (vni & 255).toString(16), '01'].map((b) => b.padStart(2, '0')).join(':');
}

/** A network-wide rule applies only to what arrives on that network's interface (ethN). */
function interfaceMatch(container: ContainerSpec, rule: IngressRule): string {
  if (!rule.network) return '';
  const index = container.interfaces.findIndex((i) => i.network === rule.network);
  if (index < 0) throw new Error(`${container.name} has a rule for network ${rule.network} but no interface on it`);
  return `iifname "eth${index}" `;
}

/**
 * The embedded cloud's control plane. A network is a bridge in the cloud's edge namespace; a
 * port is a network namespace holding a veth with the container's IP and MAC, plugged into that
 * bridge; a stretch is a VXLAN device on the bridge whose far end is the peer's WAN address.
 */
export class LocalControlPlane implements ControlPlane {
  readonly endpoint: CloudEndpoint;
  readonly state: CloudStateStore;

  constructor(private readonly cfg: LocalCloudConfig) {
    this.endpoint = { cloud: cfg.name, publicIp: cfg.publicIp };
    this.state = new CloudStateStore(path.join(cfg.dir, 'state.json'));
  }

  async listContainers(): Promise<Record<string, ContainerSpec>> {
    return (await this.state.read()).containers;
  }

  async registerContainer(spec: ContainerSpec): Promise<void> {
    await this.state.update((s) => {
      s.containers[spec.name] = spec;
    });
  }

  async unregisterContainer(name: string): Promise<void> {
    await this.state.update((s) => {
      delete s.containers[name];
    });
  }

  async getNetwork(name: string): Promise<NetworkSpec | undefined> {
    return (await this.state.read()).networks[name];
  }

  async listNetworks(): Promise<NetworkSpec[]> {
    return Object.values((await this.state.read()).networks);
  }

  async ensureNetwork(spec: NetworkSpec): Promise<{ created: boolean }> {
    const existing = await this.getNetwork(spec.name);
    if (existing && existing.cidr !== spec.cidr) {
      throw new Error(`network "${spec.name}" already exists in ${this.cfg.name} with CIDR ${existing.cidr}, not ${spec.cidr}`);
    }
    const bridge = names.bridge(spec.name);
    const present = (await ip(['link', 'show', bridge], this.cfg.netns, true)).exitCode === 0;
    if (!present) {
      await ip(['link', 'add', bridge, 'type', 'bridge'], this.cfg.netns);
      // Ports come and go during a move: forward at once instead of waiting for STP states.
      await ip(['link', 'set', bridge, 'type', 'bridge', 'forward_delay', '0'], this.cfg.netns);
      // The network's router: the same address and MAC in every cloud (an anycast gateway), so a
      // container's default route stays valid wherever it runs and each cloud routes its own.
      await ip(['link', 'set', bridge, 'address', gatewayMac(spec.vni), 'mtu', String(spec.mtu), 'up'], this.cfg.netns);
      await ip(['addr', 'add', `${gatewayIp(spec.cidr)}/${prefixLength(spec.cidr)}`, 'dev', bridge], this.cfg.netns);
    }
    await this.state.update((s) => {
      s.networks[spec.name] = spec;
    });
    if (!existing) await this.applyEdgeNat();
    return { created: !existing };
  }

  async removeNetwork(name: string): Promise<void> {
    await ip(['link', 'del', names.bridge(name)], this.cfg.netns, true);
    await ip(['link', 'del', names.vxlan(name)], this.cfg.netns, true);
    await this.state.update((s) => {
      delete s.networks[name];
      delete s.stretches[name];
    });
    await this.applyEdgeNat();
  }

  async ensureStretch(network: NetworkSpec, peerPublicIp: string): Promise<{ created: boolean }> {
    const vx = names.vxlan(network.name);
    const ns = this.cfg.netns;
    const far = this.farEnd(peerPublicIp);
    if ((await ip(['link', 'show', vx], ns, true)).exitCode !== 0) {
      // Inside the WAN tunnels the VXLAN's local end is this cloud's tunnel address (routed to each
      // peer through its own tunnel); a plain stretch sends it on the WAN from the public address.
      const underlay = this.cfg.stretchAddress ? ['local', this.cfg.stretchAddress] : ['local', this.cfg.publicIp, 'dev', 'wan0'];
      await ip(['link', 'add', vx, 'type', 'vxlan', 'id', String(network.vni), ...underlay, 'dstport', String(VXLAN_PORT), 'learning'], ns);
      await ip(['link', 'set', vx, 'mtu', String(network.mtu), 'master', names.bridge(network.name), 'up'], ns);
    }
    // Unknown destinations (and broadcasts such as ARP) are flooded to every peer. Only the
    // all-zeros entry counts: the tunnel learns the peer's MACs with the same `dst` as soon as the
    // peer's first flood arrives, which can be before this side added its own flood entry.
    const fdb = await run('bridge', ['fdb', 'show', 'dev', vx], { netns: ns });
    const floods = fdb.stdout.split('\n').some((line) => line.startsWith('00:00:00:00:00:00 ') && line.includes(` dst ${far} `));
    if (!floods) {
      await run('bridge', ['fdb', 'append', '00:00:00:00:00:00', 'dev', vx, 'dst', far], { netns: ns });
    }
    return this.state.update((s) => {
      const peers = new Set(s.stretches[network.name] ?? []);
      const created = !peers.has(peerPublicIp);
      peers.add(peerPublicIp);
      s.stretches[network.name] = [...peers];
      return { created };
    });
  }

  async removeStretch(network: NetworkSpec, peerPublicIp: string): Promise<void> {
    const vx = names.vxlan(network.name);
    await run('bridge', ['fdb', 'del', '00:00:00:00:00:00', 'dev', vx, 'dst', this.farEnd(peerPublicIp)], { netns: this.cfg.netns, allowFailure: true });
    const remaining = await this.state.update((s) => {
      s.stretches[network.name] = (s.stretches[network.name] ?? []).filter((p) => p !== peerPublicIp);
      const left = s.stretches[network.name]!.length;
      if (left === 0) delete s.stretches[network.name];
      return left;
    });
    if (remaining === 0) await ip(['link', 'del', vx], this.cfg.netns, true);
  }

  /** Where a stretch's VXLAN sends to reach the peer at `peerPublicIp`: its end of our tunnel, or its WAN address when the stretch is plain. */
  private farEnd(peerPublicIp: string): string {
    const tunnels = this.cfg.wanTunnels;
    if (!tunnels) return peerPublicIp;
    const tunnel = Object.values(tunnels).find((t) => t.peerPublicIp === peerPublicIp);
    if (!tunnel) throw new Error(`${this.cfg.name} has no WAN tunnel to ${peerPublicIp}: a stretch to a cloud outside this testbed cannot be encrypted`);
    return tunnel.peerAddress;
  }

  async stretchPeers(network: string): Promise<string[]> {
    return (await this.state.read()).stretches[network] ?? [];
  }

  async ensurePort(container: ContainerSpec): Promise<void> {
    const netns = names.containerNetns(this.cfg, container.name);
    const edge = this.cfg.netns;
    // The record is written once the port is complete and removed before it is taken apart: a
    // port recorded as this container wants it needs no work (a restore inside the freeze finds
    // its port prepared: no process to start while every member of a group waits for the CPU).
    const recorded = (await this.state.read()).ports[container.name];
    if (recorded?.shape === portShape(container) && existsSync(`/run/netns/${netns}`)) return;
    const networks: NetworkSpec[] = [];
    for (const iface of container.interfaces) {
      const network = await this.getNetwork(iface.network);
      if (!network) throw new Error(`network "${iface.network}" does not exist in ${this.cfg.name}`);
      networks.push(network);
    }
    if (!existsSync(`/run/netns/${netns}`)) {
      await ip(['netns', 'add', netns]);
      // No IPv6: its autoconfiguration would announce the MAC from two clouds at once during a move.
      await run('sysctl', ['-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1'], { netns });
      await ip(['link', 'set', 'lo', 'up'], netns);
    }
    for (const [index, iface] of container.interfaces.entries()) {
      const network = networks[index]!;
      const dev = `eth${index}`;
      const veth = names.hostVeth(container.name, index);
      if ((await ip(['link', 'show', dev], netns, true)).exitCode === 0) continue;
      await ip(['link', 'del', veth], edge, true);
      await ip(['link', 'add', veth, 'type', 'veth', 'peer', 'name', dev, 'netns', netns], edge);
      await ip(['link', 'set', dev, 'address', iface.mac, 'mtu', String(network.mtu)], netns);
      await ip(['addr', 'add', `${iface.ip}/${prefixLength(network.cidr)}`, 'dev', dev], netns);
      await ip(['link', 'set', dev, 'up'], netns);
      // Created unplugged: a port with the container's address but no process behind it would
      // answer its peers with resets (or take a migrating container's traffic) if plugged early.
      await ip(['link', 'set', veth, 'mtu', String(network.mtu), 'master', names.bridge(network.name), 'down'], edge);
      if (index === 0) await ip(['route', 'replace', 'default', 'via', gatewayIp(network.cidr), 'dev', dev], netns);
    }
    await this.applyIngressRules(netns, container);
    await this.state.update((s) => {
      s.ports[container.name] = { interfaces: container.interfaces, netns, shape: portShape(container) };
    });
  }

  /**
   * The container's security rules, enforced in its port's namespace (replaced as a whole, so a
   * retried ensurePort converges): loopback, replies to what the container opened, and the
   * allowed ports and sources pass; anything else inbound is dropped. Matching by port and
   * source, not by connection state, keeps a migrated connection (unknown to the destination's
   * connection tracking) flowing.
   */
  private async applyIngressRules(netns: string, container: ContainerSpec): Promise<void> {
    await run('nft', ['delete', 'table', 'inet', RULES_TABLE], { netns, allowFailure: true });
    const rules = container.ingress;
    if (!rules) return;
    const allow = rules.map((r) => `    ${interfaceMatch(container, r)}ip saddr ${r.from} ${r.protocol} dport ${String(r.port)} accept`);
    await run('nft', ['-f', '-'], {
      netns,
      input: [
        `table inet ${RULES_TABLE} {`,
        '  chain in {',
        '    type filter hook input priority 0; policy drop;',
        '    iif lo accept',
        '    ct state established,related accept',
        '    meta l4proto icmp accept',
        ...allow,
        '  }',
        '}',
        '',
      ].join('\n'),
    });
  }

  /** The namespace holding a port: where a process must run to use the port's address. */
  portNetns(containerName: string): string {
    return names.containerNetns(this.cfg, containerName);
  }

  /** Unplugs the port from its bridges (down) or plugs it back (up); the namespace stays. */
  async setPortEnabled(containerName: string, enabled: boolean): Promise<void> {
    const port = (await this.state.read()).ports[containerName];
    if (!port) throw new Error(`no port for ${containerName} in ${this.cfg.name}`);
    for (const [index, iface] of port.interfaces.entries()) {
      const veth = names.hostVeth(containerName, index);
      await ip(['link', 'set', veth, enabled ? 'up' : 'down'], this.cfg.netns);
      if (enabled) await this.claimMac(veth, iface.mac);
    }
  }

  /**
   * The bridge sends the port's MAC to this port from now on. A MAC learned elsewhere (the VXLAN
   * side, while the container ran in a peer cloud) would otherwise keep its traffic going there
   * until the entry ages out (5 min), since a server that only answers never teaches the bridge.
   * Dynamic: unplugging the port forgets it, and the traffic floods to the peer again. The
   * bridge refuses a dynamic entry (EPERM) until the port just set up is forwarding, which the
   * kernel reaches asynchronously: seen once in the demo, on a loaded host.
   */
  private async claimMac(veth: string, mac: string): Promise<void> {
    let refusal = '';
    await waitFor(`the bridge to take ${mac} on ${veth}`, async () => {
      const result = await run('bridge', ['fdb', 'replace', mac, 'dev', veth, 'master', 'dynamic'], { netns: this.cfg.netns, allowFailure: true });
      if (result.exitCode === 0) return true;
      if (!/Operation not permitted/.test(result.stderr)) throw new Error(`bridge fdb replace ${mac} dev ${veth}: ${result.stderr.trim()}`);
      refusal = result.stderr.trim();
      return false;
    }, 5_000, 5).catch((err: unknown) => {
      throw refusal ? new Error(`${(err as Error).message} (the bridge said: ${refusal})`) : err;
    });
  }

  async removePort(containerName: string): Promise<void> {
    // Forgotten first: a removal cut short leaves a port that ensurePort rebuilds, never one it trusts.
    const port = await this.state.update((s) => {
      const recorded = s.ports[containerName];
      delete s.ports[containerName];
      return recorded;
    });
    for (const index of (port?.interfaces ?? [undefined]).keys()) await ip(['link', 'del', names.hostVeth(containerName, index)], this.cfg.netns, true);
    const netns = names.containerNetns(this.cfg, containerName);
    if (existsSync(`/run/netns/${netns}`)) await ip(['netns', 'del', netns]);
  }

  async addressesInUse(network: string): Promise<Array<{ ip: string; mac: string; owner: string }>> {
    const state = await this.state.read();
    return Object.entries(state.ports).flatMap(([owner, port]) =>
      port.interfaces.filter((i) => i.network === network).map((i) => ({ ip: i.ip, mac: i.mac, owner })),
    );
  }

  private dnsApi(): PowerDnsApi {
    if (!this.cfg.dns) throw new Error(`${this.cfg.name} offers no DNS service`);
    return new PowerDnsApi(this.cfg.dns);
  }

  async dnsZones(): Promise<string[]> {
    return this.cfg.dns ? this.dnsApi().zones() : [];
  }

  dnsRecords(zone: string): Promise<DnsRecord[]> {
    return this.dnsApi().records(zone);
  }

  setDnsRecords(zone: string, records: DnsRecord[]): Promise<void> {
    return this.dnsApi().replace(zone, records);
  }

  deleteDnsRecords(zone: string, names: string[]): Promise<void> {
    return this.dnsApi().delete(zone, names);
  }

  floatingIpRange(): string {
    return this.cfg.floatingRange;
  }

  async floatingIps(): Promise<Array<{ address: string; container: string; privateIp: string }>> {
    return Object.entries((await this.state.read()).floatingIps).map(([address, f]) => ({ address, ...f }));
  }

  async associateFloatingIp(input: { container: string; privateIp: string; address?: string }): Promise<string> {
    const range = parseCidr(this.cfg.floatingRange)!;
    const size = 2 ** (32 - range.prefix);
    const address = await this.state.update((s) => {
      const held = Object.entries(s.floatingIps).find(([, f]) => f.container === input.container);
      if (held && (!input.address || input.address === held[0])) {
        s.floatingIps[held[0]] = { container: input.container, privateIp: input.privateIp };
        return held[0];
      }
      if (held) throw new Error(`${input.container} already has floating IP ${held[0]} in ${this.cfg.name}, not ${input.address}`);
      let chosen = input.address;
      if (chosen) {
        if (!cidrContains(this.cfg.floatingRange, chosen)) throw new Error(`floating IP ${chosen} is outside ${this.cfg.name}'s range ${this.cfg.floatingRange}`);
        const owner = s.floatingIps[chosen];
        if (owner) throw new Error(`floating IP ${chosen} is already ${owner.container}'s in ${this.cfg.name}`);
      } else {
        for (let host = 1; host < size - 1 && !chosen; host++) {
          const candidate = intToIp(range.net + host);
          if (!s.floatingIps[candidate]) chosen = candidate;
        }
        if (!chosen) throw new Error(`${this.cfg.name} has no free floating IP left in ${this.cfg.floatingRange}`);
      }
      s.floatingIps[chosen] = { container: input.container, privateIp: input.privateIp };
      return chosen;
    });
    await this.applyEdgeNat();
    return address;
  }

  async releaseFloatingIp(container: string): Promise<void> {
    const released = await this.state.update((s) => {
      const held = Object.entries(s.floatingIps).filter(([, f]) => f.container === container).map(([address]) => address);
      for (const address of held) delete s.floatingIps[address];
      return held;
    });
    if (!released.length) return;
    for (const address of released) await ip(['addr', 'del', `${address}/32`, 'dev', 'wan0'], this.cfg.netns, true);
    await this.applyEdgeNat();
  }

  /**
   * The edge's NAT and forwarding policy, rebuilt from the recorded floating IPs (so a retry
   * converges): inbound to a floating IP is DNATed to its container, what that container sends
   * out is SNATed to it, and nothing else is routed between the WAN and the VIs' networks, nor
   * between two networks (of one VI or two: VIs are isolated from each other). Each floating IP is also an address of the edge's WAN interface (it
   * answers ARP for it).
   */
  private async applyEdgeNat(): Promise<void> {
    const netns = this.cfg.netns;
    const fips = await this.floatingIps();
    const networks = await this.listNetworks();
    const bridges = networks.map((n) => names.bridge(n.name));
    const subnets = networks.map((n) => n.cidr);
    const present = (await ip(['-j', 'addr', 'show', 'dev', 'wan0'], netns)).stdout;
    for (const f of fips) if (!present.includes(`"${f.address}"`)) await ip(['addr', 'add', `${f.address}/32`, 'dev', 'wan0'], netns);
    // Replaced in one transaction, as the drain's table is: a delete then a re-add left a moment
    // in which a drained connection's reply went out unmarked, outside the tunnel.
    await run('nft', ['-f', '-'], {
      netns,
      input: [
        `table ip ${EDGE_TABLE} {}`,
        `delete table ip ${EDGE_TABLE}`,
        `table ip ${EDGE_TABLE} {`,
        '  chain pre {',
        '    type nat hook prerouting priority dstnat;',
        ...fips.map((f) => `    iifname "wan0" ip daddr ${f.address} dnat to ${f.privateIp}`),
        '  }',
        '  chain post {',
        '    type nat hook postrouting priority srcnat;',
        // Replies of drained connections keep their private source: the peer's edge un-NATs them.
        `    meta mark ${DRAIN_MARK} accept`,
        ...fips.map((f) => `    oifname "wan0" ip saddr ${f.privateIp} snat to ${f.address}`),
        '  }',
        '  chain forward {',
        '    type filter hook forward priority filter; policy accept;',
        // A connection neither NATed here nor drained (no mark) would leave with a private source:
        // the drained connections still open when their drain ends, whose marks are gone.
        ...(subnets.length ? [`    oifname "wan0" ip saddr { ${subnets.join(', ')} } meta mark ${NOT_DRAIN_MARK} ct state established ct status & (snat | dnat) == 0 drop`] : []),
        '    ct state established,related accept',
        '    iifname "wan0" ct status dnat accept',
        ...fips.map((f) => `    oifname "wan0" ip saddr ${f.privateIp} accept`),
        '    iifname "wan0" drop',
        '    oifname "wan0" drop',
        // Pair by pair: with br_netfilter, traffic bridged inside one network shows here with the
        // bridge as both its in and out device, and must pass.
        ...bridges.flatMap((a) => bridges.filter((b) => b !== a).map((b) => `    iifname "${a}" oifname "${b}" drop`)),
        '  }',
        '}',
        '',
      ].join('\n'),
    });
  }

  async openPublicConnections(container: string): Promise<PublicConnection[]> {
    const fips = (await this.floatingIps()).filter((f) => f.container === container);
    if (!fips.length) return [];
    // This worker runs in the edge's namespace: /proc/net is the edge's connection tracking.
    const table = await readFile('/proc/net/nf_conntrack', 'utf8').catch((err: Error) => {
      throw new Error(`${this.cfg.name} cannot read its connection tracking (/proc/net/nf_conntrack: ${err.message}): open outside connections cannot be drained; plan option drainTimeoutSeconds: 0 moves without draining`);
    });
    const open: PublicConnection[] = [];
    for (const line of table.split('\n')) {
      if (!/ tcp /.test(line) || !/ ESTABLISHED /.test(line)) continue;
      const fields = [...line.matchAll(/(src|dst|sport|dport)=(\S+)/g)].map((m) => m[2]!);
      const [src, dst, sport, , replySrc, , replySport] = fields;
      if (!src || !dst || !replySrc || !fips.some((f) => f.address === dst && f.privateIp === replySrc)) continue;
      open.push({ client: src, clientPort: Number(sport), privateIp: replySrc, port: Number(replySport) });
    }
    return open;
  }

  async routeRepliesVia(container: string, connections: PublicConnection[], peerPublicIp: string): Promise<void> {
    await this.state.update((s) => {
      if (connections.length) s.drains[container] = { peer: peerPublicIp, connections };
      else delete s.drains[container];
    });
    await this.applyDrains();
  }

  /**
   * Marks what a drained container sends out (but replies of this edge's own NAT) as it enters
   * the edge from a VI's network, and routes marked packets to the peer's edge over the WAN (one
   * routing table per peer), never SNATed here. Rebuilt from the recorded drains, so a retry
   * converges.
   */
  private async applyDrains(): Promise<void> {
    const netns = this.cfg.netns;
    const drains = Object.values((await this.state.read()).drains);
    const peers = [...new Set(drains.map((d) => d.peer))];
    const tableOf = (peer: string) => DRAIN_ROUTE_TABLE_BASE + Number(peer.split('.')[3]);
    for (const peer of peers) {
      // Inside the pair's tunnel when there is one: these replies carry a container's private address.
      const tunnel = Object.values(this.cfg.wanTunnels ?? {}).find((t) => t.peerPublicIp === peer);
      const via = tunnel ? ['via', tunnel.peerAddress, 'dev', tunnel.interface] : ['via', peer, 'dev', 'wan0'];
      await ip(['route', 'replace', 'default', ...via, 'table', String(tableOf(peer))], netns);
      const rules = (await ip(['rule', 'show'], netns)).stdout;
      const mark = `0x${(DRAIN_MARK_BASE + Number(peer.split('.')[3])).toString(16)}`;
      if (!rules.includes(`fwmark ${mark} lookup ${tableOf(peer)}`)) await ip(['rule', 'add', 'fwmark', mark, 'lookup', String(tableOf(peer))], netns);
    }
    if (!drains.length) {
      await run('nft', ['delete', 'table', 'ip', DRAIN_TABLE], { netns, allowFailure: true });
      return;
    }
    const subnets = (await this.listNetworks()).map((n) => n.cidr);
    // Replaced in one transaction: between a delete and a re-add, the replies of the connections
    // drained meanwhile went unmarked out of the WAN, without the peer's NAT (seen in a capture).
    await run('nft', ['-f', '-'], {
      netns,
      input: [
        `table ip ${DRAIN_TABLE} {}`,
        `delete table ip ${DRAIN_TABLE}`,
        `table ip ${DRAIN_TABLE} {`,
        '  chain pre {',
        '    type filter hook prerouting priority mangle;',
        // Everything the container sends out that is not a reply of this edge's own NAT: replies
        // of the connections open through the old address, and of new ones that clients with a
        // cached name still open there during the drain (the peer's edge NATs them all).
        ...drains.flatMap((d) =>
          [...new Set(d.connections.map((c) => c.privateIp))].map(
            (privateIp) => `    iifname "br-*" ip saddr ${privateIp} ip daddr != { ${subnets.join(', ')} } ct status & dnat == 0 meta mark set ${DRAIN_MARK_BASE + Number(d.peer.split('.')[3])}`,
          ),
        ),
        '  }',
        '}',
        '',
      ].join('\n'),
    });
  }

  async setCloseGuard(containerName: string, enabled: boolean): Promise<void> {
    const netns = names.containerNetns(this.cfg, containerName);
    if (!existsSync(`/run/netns/${netns}`)) return;
    await run('nft', ['delete', 'table', 'inet', GUARD_TABLE], { netns, allowFailure: true });
    if (enabled) {
      await run('nft', ['-f', '-'], {
        netns,
        input: `table inet ${GUARD_TABLE} {\n  chain out {\n    type filter hook output priority 0; policy accept;\n    tcp flags & (fin | rst) != 0 drop\n  }\n}\n`,
      });
    }
  }

  transferEndpoint(directory: string, peer?: string): TransferEndpoint {
    // The host key is public; its digest lets the sender verify it talks to this cloud.
    const publicKey = readFileSync(`${this.cfg.sshHostKeyPath}.pub`, 'utf8').trim().split(/\s+/)[1]!;
    const hostKeySha256 = createHash('sha256').update(Buffer.from(publicKey, 'base64')).digest('base64');
    const common = { cloud: this.cfg.name, host: this.cfg.publicIp, port: this.cfg.sshPort, hostKeySha256, streamPort: IMAGE_STREAM_PORT, pageServerPorts: PAGE_SERVER_PORTS };
    const inbox = peer ? this.cfg.inboxes?.[peer] : undefined;
    // A testbed made before inboxes per peer: its peers log in as root and see the whole tree.
    if (!inbox) return { ...common, username: 'root', directory };
    // `directory` as the worker sees it (a link into the inbox); the peer's sftp sees it inside its chroot.
    const real = existsSync(directory) ? realpathSync(directory) : path.resolve(directory);
    // A directory of this cloud's own (an image its page servers read): the peer only reaches the forwarded ports.
    if (!real.startsWith(`${inbox.chroot}/`)) return { ...common, username: inbox.account, directory: '/incoming' };
    // The peer writes by sftp inside its chroot, and streams images to this cloud's worker, which writes where it sees the directory.
    return { ...common, username: inbox.account, directory: real.slice(inbox.chroot.length), localDirectory: path.resolve(directory) };
  }

  async peerInbox(peer: string, relative: string): Promise<string | undefined> {
    const inbox = this.cfg.inboxes?.[peer];
    if (!inbox) return undefined;
    const dir = path.join(inbox.chroot, 'incoming', relative);
    if (!dir.startsWith(path.join(inbox.chroot, 'incoming') + '/')) throw new Error(`${relative} leaves ${peer}'s inbox`);
    // Each level made here (root's worker) and handed to the peer's account: it may write there and nowhere else.
    let at = path.join(inbox.chroot, 'incoming');
    for (const part of path.relative(at, dir).split('/')) {
      at = path.join(at, part);
      await mkdir(at, { recursive: true, mode: 0o700 });
      await chown(at, inbox.uid, inbox.gid);
    }
    return dir;
  }
}
