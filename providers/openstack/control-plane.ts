/**
 * An OpenStack project as a MigraVI cloud. Neutron, Nova and Designate hold the truth: networks,
 * subnets, ports (the containers' own IPs and MACs), security groups and floating IPs are made
 * through their APIs and read back from them; the container records are the metadata of the Nova
 * server that stands for the host. The host's edge then realises what Neutron says, as an agent
 * would — with the embedded cloud's machinery (bridges, port namespaces, VXLAN, nftables), which
 * also carries what OpenStack has no word for: the stretch to a peer cloud, the drain, the guard.
 */
import type { CloudEndpoint, ContainerSpec, DnsRecord, NetworkSpec, PublicConnection, TransferEndpoint } from '../../lib/types';
import { gatewayIp, type LocalControlPlane } from '../local/control-plane';
import type { ControlPlane } from '../provider';
import { isNotFound, type OpenStackConnection, type Port, type SecurityGroupRule } from './api';
import type { OpenStackCloudConfig } from './cloud-config';

/** What MigraVI keeps of a network that Neutron has no field for, in its description. */
const NETWORK_TAG = 'migravi:';
/** Container records in the host server's metadata: key "migravi.<container>.<chunk>", ≤ 255 characters each. */
const RECORD_PREFIX = 'migravi.';
const CHUNK = 255;
const ROUTER = 'migravi-edge';
/** The metadata writes of this process to each host server, one after the other (see registerContainer). */
const metadataQueues = new Map<string, Promise<unknown>>();
function serialised<T>(server: string, write: () => Promise<T>): Promise<T> {
  const next = (metadataQueues.get(server) ?? Promise.resolve()).catch(() => undefined).then(write);
  metadataQueues.set(server, next);
  return next;
}

/** Ports Neutron makes for a network itself, not for anything plugged into it. */
const NETWORK_OWNED = new Set(['network:router_interface', 'network:dhcp']);

const portName = (container: string, index: number) => `${container}/eth${index}`;
const groupName = (container: string, index: number) => `migravi:${container}/eth${index}`;
const containerOfPort = (port: Pick<Port, 'name'>) => port.name.split('/')[0]!;

function ruleKey(r: Pick<SecurityGroupRule, 'protocol' | 'port_range_min' | 'port_range_max' | 'remote_ip_prefix'>): string {
  return `${r.protocol}:${r.port_range_min}-${r.port_range_max}:${r.remote_ip_prefix}`;
}

/** The container's ingress rules that apply on its interface `index`, as Neutron rules. */
function wantedRules(container: ContainerSpec, index: number): Array<{ protocol: string; port_range_min: number; port_range_max: number; remote_ip_prefix: string }> {
  const network = container.interfaces[index]!.network;
  return (container.ingress ?? []).filter((r) => !r.network || r.network === network).map((r) => {
    const [low, high] = String(r.port).split('-').map(Number);
    return { protocol: r.protocol, port_range_min: low!, port_range_max: high ?? low!, remote_ip_prefix: r.from };
  });
}

export class OpenStackControlPlane implements ControlPlane {
  readonly endpoint: CloudEndpoint;
  private hostServerId: string | undefined;

  constructor(
    private readonly cfg: OpenStackCloudConfig,
    private readonly api: OpenStackConnection,
    /** The host's edge, realising what Neutron records. */
    private readonly edge: LocalControlPlane,
  ) {
    this.endpoint = edge.endpoint;
  }

  // Container records: the host server's metadata.

  /** The Nova server standing for the host: found by name, else booted (the fake or a real driver). */
  private async hostServer(): Promise<string> {
    if (this.hostServerId) return this.hostServerId;
    const { name, flavor, image } = this.cfg.hostServer;
    let server = (await this.api.nova.listServers({ name }))[0];
    if (!server) {
      const flavorId = (await this.api.nova.listFlavors()).find((f) => f.name === flavor)?.id;
      if (!flavorId) throw new Error(`${this.cfg.name}: no flavor "${flavor}" for the host server ${name}`);
      const imageId = await this.imageId(image);
      const created = await this.api.nova.createServer({ name, flavorRef: flavorId, imageRef: imageId, networks: 'none', metadata: { 'migravi.host': this.cfg.name } });
      server = await this.api.nova.waitForServer(created.id, 'ACTIVE', { timeoutMs: 180_000 });
    }
    this.hostServerId = server.id;
    return server.id;
  }

  private async imageId(name: string): Promise<string> {
    const glance = this.api.session.client('nova', 'image', { region: this.cfg.connection.region, interface: this.cfg.connection.interface });
    const images = await glance.get<{ images: Array<{ id: string; name: string }> }>('/v2/images', { query: { name }, resource: `image "${name}"` });
    const found = images.images.find((i) => i.name === name);
    if (!found) throw new Error(`${this.cfg.name}: no image "${name}" for the host server`);
    return found.id;
  }

  async listContainers(): Promise<Record<string, ContainerSpec>> {
    const metadata = await this.api.nova.serverMetadata(await this.hostServer());
    const chunks = new Map<string, string[]>();
    for (const [key, value] of Object.entries(metadata)) {
      const match = /^migravi\.(.+)\.(\d+)$/.exec(key);
      if (!match) continue;
      const parts = chunks.get(match[1]!) ?? [];
      parts[Number(match[2])] = value;
      chunks.set(match[1]!, parts);
    }
    return Object.fromEntries([...chunks].map(([name, parts]) => [name, JSON.parse(parts.join('')) as ContainerSpec]));
  }

  async registerContainer(spec: ContainerSpec): Promise<void> {
    const server = await this.hostServer();
    const text = JSON.stringify(spec);
    const chunks = Array.from({ length: Math.ceil(text.length / CHUNK) }, (_, i) => text.slice(i * CHUNK, (i + 1) * CHUNK));
    const wanted = Object.fromEntries(chunks.map((c, i) => [`${RECORD_PREFIX}${spec.name}.${i}`, c]));
    await serialised(server, async () => {
      // Nova saves an instance's metadata whole: of two updates at once, the second drops the
      // first's keys. Updates from this process queue up; one from elsewhere is caught by reading back.
      for (let attempt = 1; ; attempt++) {
        await this.api.nova.updateServerMetadata(server, wanted);
        const stored = await this.api.nova.serverMetadata(server);
        if (Object.entries(wanted).every(([k, v]) => stored[k] === v)) break;
        if (attempt === 5) throw new Error(`${this.cfg.name}: the record of ${spec.name} does not stay in the metadata of ${this.cfg.hostServer.name} (Nova); another writer keeps replacing it`);
      }
      await this.deleteChunks(spec.name, chunks.length);
    });
  }

  async unregisterContainer(name: string): Promise<void> {
    await serialised(await this.hostServer(), () => this.deleteChunks(name, 0));
  }

  /** Removes the record's chunks from `from` on (a shorter record leaves none of the longer one's tail). */
  private async deleteChunks(name: string, from: number): Promise<void> {
    const server = await this.hostServer();
    const keys = Object.keys(await this.api.nova.serverMetadata(server)).filter((k) => k.startsWith(`${RECORD_PREFIX}${name}.`) && Number(k.slice(`${RECORD_PREFIX}${name}.`.length)) >= from);
    for (const key of keys) await this.api.nova.deleteServerMetadata(server, key);
  }

  // Networks: a Neutron network and subnet each, realised as a bridge on the host's edge.

  private async neutronNetwork(name: string) {
    return (await this.api.neutron.listNetworks({ name })).find((n) => n.name === name && n.description?.startsWith(NETWORK_TAG));
  }

  async getNetwork(name: string): Promise<NetworkSpec | undefined> {
    const network = await this.neutronNetwork(name);
    if (!network) return undefined;
    const subnet = (await this.api.neutron.listSubnets({ network_id: network.id }))[0];
    if (!subnet) return undefined;
    const extra = JSON.parse(network.description!.slice(NETWORK_TAG.length)) as { vni: number; mtu: number; vi?: string };
    return { name, cidr: subnet.cidr, ...extra };
  }

  async listNetworks(): Promise<NetworkSpec[]> {
    const networks = (await this.api.neutron.listNetworks()).filter((n) => n.description?.startsWith(NETWORK_TAG));
    const specs = await Promise.all(networks.map((n) => this.getNetwork(n.name)));
    return specs.filter((s): s is NetworkSpec => s !== undefined);
  }

  async ensureNetwork(spec: NetworkSpec): Promise<{ created: boolean }> {
    const existing = await this.getNetwork(spec.name);
    if (existing && existing.cidr !== spec.cidr) {
      throw new Error(`network "${spec.name}" already exists in ${this.cfg.name} (Neutron) with CIDR ${existing.cidr}, not ${spec.cidr}`);
    }
    if (!existing) {
      const description = `${NETWORK_TAG}${JSON.stringify({ vni: spec.vni, mtu: spec.mtu, ...(spec.vi ? { vi: spec.vi } : {}) })}`;
      const network = (await this.neutronNetwork(spec.name)) ?? (await this.api.neutron.createNetwork({ name: spec.name, description }));
      // The gateway is the network's anycast router on the host's edge, the same address in every cloud.
      await this.api.neutron.createSubnet({ network_id: network.id, name: spec.name, cidr: spec.cidr, gateway_ip: gatewayIp(spec.cidr) });
    }
    await this.edge.ensureNetwork(spec);
    return { created: !existing };
  }

  async removeNetwork(name: string): Promise<void> {
    await this.edge.removeNetwork(name);
    const network = await this.neutronNetwork(name);
    if (!network) return;
    const router = (await this.api.neutron.listRouters({ name: ROUTER }))[0];
    if (router) {
      for (const subnet of await this.api.neutron.listSubnets({ network_id: network.id })) await this.api.neutron.removeRouterInterface(router.id, subnet.id, { ifExists: true });
      // The router goes with the last network it served: nothing of MigraVI's stays in the project.
      const left = (await this.api.neutron.listPorts({ device_id: router.id })).filter((p) => p.device_owner === 'network:router_interface');
      if (!left.length) await this.api.neutron.deleteRouter(router.id, { ifExists: true, retryOnConflict: true });
    }
    await this.api.neutron.deleteNetwork(network.id, { ifExists: true, retryOnConflict: true });
  }

  // The stretch to a peer cloud crosses the WAN: only the host's edge knows it.

  ensureStretch(network: NetworkSpec, peerPublicIp: string): Promise<{ created: boolean }> {
    return this.edge.ensureStretch(network, peerPublicIp);
  }

  removeStretch(network: NetworkSpec, peerPublicIp: string): Promise<void> {
    return this.edge.removeStretch(network, peerPublicIp);
  }

  stretchPeers(network: string): Promise<string[]> {
    return this.edge.stretchPeers(network);
  }

  // Ports: a Neutron port per interface, with its security group; then plugged on the host.

  private async containerPorts(container: string): Promise<Port[]> {
    return (await this.api.neutron.listPorts({ device_owner: 'migravi:container' })).filter((p) => containerOfPort(p) === container);
  }

  async ensurePort(container: ContainerSpec): Promise<void> {
    const host = await this.hostServer();
    const existing = await this.containerPorts(container.name);
    for (const [index, iface] of container.interfaces.entries()) {
      const network = await this.neutronNetwork(iface.network);
      if (!network) throw new Error(`network "${iface.network}" does not exist in ${this.cfg.name}`);
      const subnet = (await this.api.neutron.listSubnets({ network_id: network.id }))[0]!;
      const groups = container.ingress ? [await this.ensureSecurityGroup(container, index)] : [];
      let port = existing.find((p) => p.name === portName(container.name, index));
      if (port && (port.network_id !== network.id || port.mac_address !== iface.mac || port.fixed_ips[0]?.ip_address !== iface.ip)) {
        await this.api.neutron.deletePort(port.id, { ifExists: true });
        port = undefined;
      }
      if (!port) {
        // Created down (unplugged): the host plugs it when the container runs behind it. The device
        // is not the Nova server's own id: Nova deletes the ports of its instances (on a delete, a
        // reschedule, a failed build), and these belong to the containers, not to the host.
        await this.api.neutron.createPort({
          network_id: network.id, name: portName(container.name, index), fixed_ips: [{ subnet_id: subnet.id, ip_address: iface.ip }],
          mac_address: iface.mac, admin_state_up: false, device_owner: 'migravi:container', device_id: `migravi-host:${host}`,
          ...(groups.length ? { security_groups: groups } : { port_security_enabled: false }),
        });
      } else if (groups.length && port.security_groups.join() !== groups.join()) {
        await this.api.neutron.updatePort(port.id, { security_groups: groups });
      }
    }
    for (const stale of existing.filter((p) => !container.interfaces.some((_, i) => p.name === portName(container.name, i)))) {
      await this.api.neutron.deletePort(stale.id, { ifExists: true });
    }
    await this.edge.ensurePort(container);
  }

  /** The interface's security group, holding exactly the container's rules for it (plus Neutron's default egress). */
  private async ensureSecurityGroup(container: ContainerSpec, index: number): Promise<string> {
    const name = groupName(container.name, index);
    const group = (await this.api.neutron.listSecurityGroups({ name })).find((g) => g.name === name) ?? (await this.api.neutron.createSecurityGroup({ name, description: `MigraVI: ingress of ${container.name} on ${container.interfaces[index]!.network}` }));
    const have = (await this.api.neutron.listSecurityGroupRules(group.id)).filter((r) => r.direction === 'ingress');
    const want = wantedRules(container, index);
    for (const rule of have.filter((h) => !want.some((w) => ruleKey(w) === ruleKey(h)))) await this.api.neutron.deleteSecurityGroupRule(rule.id, { ifExists: true });
    for (const rule of want.filter((w) => !have.some((h) => ruleKey(h) === ruleKey(w)))) await this.api.neutron.createSecurityGroupRule({ security_group_id: group.id, ...rule });
    return group.id;
  }

  async removePort(containerName: string): Promise<void> {
    await this.edge.removePort(containerName);
    for (const port of await this.containerPorts(containerName)) await this.api.neutron.deletePort(port.id, { ifExists: true });
    for (const group of await this.api.neutron.listSecurityGroups()) {
      if (group.name.startsWith(`migravi:${containerName}/`)) await this.api.neutron.deleteSecurityGroup(group.id, { ifExists: true, retryOnConflict: true });
    }
  }

  async setPortEnabled(containerName: string, enabled: boolean): Promise<void> {
    const ports = await this.containerPorts(containerName);
    if (!ports.length) throw new Error(`no port for ${containerName} in ${this.cfg.name} (Neutron)`);
    for (const port of ports) if (port.admin_state_up !== enabled) await this.api.neutron.updatePort(port.id, { admin_state_up: enabled });
    await this.edge.setPortEnabled(containerName, enabled);
  }

  async addressesInUse(network: string): Promise<Array<{ ip: string; mac: string; owner: string }>> {
    const found = await this.neutronNetwork(network);
    if (!found) return [];
    // The network's own ports (its router's interface, DHCP) use no address of a VI's and go
    // with the network (removeNetwork): they would otherwise keep it forever.
    const ports = (await this.api.neutron.listPorts({ network_id: found.id })).filter((p) => !NETWORK_OWNED.has(p.device_owner));
    return ports.flatMap((p) => p.fixed_ips.map((f) => ({ ip: f.ip_address, mac: p.mac_address, owner: p.device_owner === 'migravi:container' ? containerOfPort(p) : p.device_owner || p.id })));
  }

  // Floating IPs: Neutron's, through a router to the external network; NATed on the host's edge.

  floatingIpRange(): string {
    return this.cfg.floatingRange;
  }

  private async externalNetworkId(): Promise<string> {
    const external = (await this.api.neutron.listNetworks({ name: this.cfg.externalNetwork })).find((n) => n['router:external']);
    if (!external) throw new Error(`${this.cfg.name}: no external network "${this.cfg.externalNetwork}" for floating IPs`);
    return external.id;
  }

  /** The project's router, with a gateway on the external network and an interface on the port's subnet (Neutron requires both for a floating IP). */
  private async routeToExternal(subnetId: string): Promise<void> {
    const externalId = await this.externalNetworkId();
    const router = (await this.api.neutron.listRouters({ name: ROUTER }))[0] ?? (await this.api.neutron.createRouter({ name: ROUTER, external_gateway_info: { network_id: externalId } }));
    const attached = (await this.api.neutron.listPorts({ device_id: router.id })).some((p) => p.fixed_ips.some((f) => f.subnet_id === subnetId));
    if (!attached) await this.api.neutron.addRouterInterface(router.id, subnetId);
  }

  async associateFloatingIp(input: { container: string; privateIp: string; address?: string }): Promise<string> {
    const port = (await this.containerPorts(input.container)).find((p) => p.fixed_ips.some((f) => f.ip_address === input.privateIp));
    if (!port) throw new Error(`${input.container} has no port with ${input.privateIp} in ${this.cfg.name} (Neutron)`);
    const held = (await this.api.neutron.listFloatingIps({ port_id: port.id }))[0];
    if (held && input.address && held.floating_ip_address !== input.address) {
      throw new Error(`${input.container} already has floating IP ${held.floating_ip_address} in ${this.cfg.name}, not ${input.address}`);
    }
    let address = held?.floating_ip_address;
    if (!address) {
      await this.routeToExternal(port.fixed_ips[0]!.subnet_id);
      const fip = await this.api.neutron.createFloatingIp({
        floating_network_id: await this.externalNetworkId(), port_id: port.id, fixed_ip_address: input.privateIp,
        ...(input.address ? { floating_ip_address: input.address } : {}), description: `MigraVI: ${input.container}`,
      });
      address = fip.floating_ip_address;
    }
    await this.edge.associateFloatingIp({ container: input.container, privateIp: input.privateIp, address });
    return address;
  }

  async releaseFloatingIp(container: string): Promise<void> {
    // After a migration the port is gone before the drain ends (Neutron then only disassociates
    // the address, which stays the project's): the edge's NAT still names the address to free.
    const held = (await this.edge.floatingIps()).filter((f) => f.container === container).map((f) => f.address);
    await this.edge.releaseFloatingIp(container);
    const fips = [
      ...(await Promise.all(held.map((address) => this.api.neutron.listFloatingIps({ floating_ip_address: address })))).flat(),
      ...(await Promise.all((await this.containerPorts(container)).map((port) => this.api.neutron.listFloatingIps({ port_id: port.id })))).flat(),
    ];
    const own = this.api.session.projectId;
    for (const fip of new Map(fips.map((f) => [f.id, f])).values()) {
      if (fip.project_id === own) await this.api.neutron.deleteFloatingIp(fip.id, { ifExists: true });
    }
  }

  async floatingIps(): Promise<Array<{ address: string; container: string; privateIp: string }>> {
    const ports = new Map((await this.api.neutron.listPorts({ device_owner: 'migravi:container' })).map((p) => [p.id, p]));
    return (await this.api.neutron.listFloatingIps())
      .filter((f) => f.port_id && ports.has(f.port_id))
      .map((f) => ({ address: f.floating_ip_address, container: containerOfPort(ports.get(f.port_id!)!), privateIp: f.fixed_ip_address! }));
  }

  openPublicConnections(container: string): Promise<PublicConnection[]> {
    return this.edge.openPublicConnections(container);
  }

  routeRepliesVia(container: string, connections: PublicConnection[], peerPublicIp: string): Promise<void> {
    return this.edge.routeRepliesVia(container, connections, peerPublicIp);
  }

  // DNS: the project's Designate zones.

  async dnsZones(): Promise<string[]> {
    try {
      return (await this.api.designate.listZones()).map((z) => z.name);
    } catch (err) {
      // A cloud without Designate in its catalog offers no DNS service.
      if (/no "dns" endpoint/.test((err as Error).message)) return [];
      throw err;
    }
  }

  private async zoneId(zone: string): Promise<string> {
    const found = await this.api.designate.findZone(zone);
    if (!found) throw new Error(`${this.cfg.name} has no DNS zone ${zone} (Designate)`);
    return found.id;
  }

  async dnsRecords(zone: string): Promise<DnsRecord[]> {
    const records = await this.api.designate.listRecordsets(await this.zoneId(zone), { type: 'A' });
    return records.map((r) => ({ name: r.name, ttl: r.ttl ?? 0, addresses: [...r.records].sort() }));
  }

  /** Designate has no transaction: each name is changed in turn, and a failure puts back those already changed. */
  async setDnsRecords(zone: string, records: DnsRecord[]): Promise<void> {
    const zoneId = await this.zoneId(zone);
    const undo: Array<() => Promise<unknown>> = [];
    try {
      for (const record of records) {
        const existing = await this.api.designate.findRecordset(zoneId, record.name, 'A');
        if (existing) {
          const before = { records: existing.records, ttl: existing.ttl };
          const updated = await this.api.designate.updateRecordset(zoneId, existing.id, { records: record.addresses, ttl: record.ttl });
          undo.push(() => this.api.designate.updateRecordset(zoneId, existing.id, before));
          await this.api.designate.waitForRecordset(zoneId, updated.id, { timeoutMs: 60_000 });
        } else {
          const created = await this.api.designate.createRecordset(zoneId, { name: record.name, type: 'A', records: record.addresses, ttl: record.ttl });
          undo.push(() => this.api.designate.deleteRecordset(zoneId, created.id, { ifExists: true }));
          await this.api.designate.waitForRecordset(zoneId, created.id, { timeoutMs: 60_000 });
        }
      }
    } catch (err) {
      for (const step of undo.reverse()) await step().catch(() => undefined);
      throw err;
    }
  }

  async deleteDnsRecords(zone: string, names: string[]): Promise<void> {
    const zoneId = await this.zoneId(zone);
    for (const name of names) {
      const existing = await this.api.designate.findRecordset(zoneId, name, 'A');
      if (existing) await this.api.designate.deleteRecordset(zoneId, existing.id, { ifExists: true }).catch((err: unknown) => {
        if (!isNotFound(err)) throw err;
      });
    }
  }

  setCloseGuard(containerName: string, enabled: boolean): Promise<void> {
    return this.edge.setCloseGuard(containerName, enabled);
  }

  transferEndpoint(directory: string, peer?: string): TransferEndpoint {
    return this.edge.transferEndpoint(directory, peer);
  }

  peerInbox(peer: string, relative: string): Promise<string | undefined> {
    return this.edge.peerInbox(peer, relative);
  }
}
