/**
 * Deploying a VI description into a cloud, and removing it: what the deployVi / removeVi
 * activities do, through the provider interface only. Every conflict (a name, an address, a MAC,
 * an overlapping subnet, a missing root filesystem) is found before anything is touched; a
 * repeated deploy of the same file changes nothing.
 */
import { existsSync, statSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { allocateAddresses, cidrContains, cidrsOverlap, fqdn, recordName, type UsedAddresses, type ViSpec } from '../lib/vi-spec';
import type { ContainerSpec, IngressRule, NetworkSpec, PublicName } from '../lib/types';
import type { Cloud } from '../providers/provider';

export class DeployConflict extends Error {
  constructor(readonly problems: string[]) {
    super(`cannot deploy: ${problems.join('; ')}`);
    this.name = 'DeployConflict';
  }
}

export interface DeployOutcome {
  vi: string;
  cloud: string;
  /** Containers started by this deploy. */
  started: string[];
  /** Containers already running with the same description (a repeated deploy). */
  unchanged: string[];
  /** Networks created by this deploy. */
  networksCreated: string[];
  containers: Array<{ name: string; addresses: string[]; floatingIp?: string; publicNames?: PublicName[] }>;
}

export interface RemoveOutcome {
  vi: string;
  cloud: string;
  containers: string[];
  networks: string[];
  /** Volume directories deleted (deleteVolumes) or kept. */
  volumesDeleted: string[];
  volumesKept: string[];
  /** Public names its containers had (their records are for the DNS cloud to delete). */
  publicNames: PublicName[];
}

/** VXLAN id of a VI's network: derived from the names, so every cloud computes the same one. */
export function networkVni(vi: string, network: string, salt = 0): number {
  let h = 2166136261;
  for (const ch of `${vi}/${network}/${salt}`) h = Math.imul(h ^ ch.charCodeAt(0), 16777619) >>> 0;
  return 1 + (h % 0xfffffe);
}

/** The cloud-level specs of a VI whose addresses are all allocated. */
export function specsOf(vi: ViSpec, vnis: Record<string, number>): { networks: NetworkSpec[]; containers: Array<{ spec: ContainerSpec; rootfs: string }> } {
  const networks = vi.networks.map((n) => ({ name: n.name, cidr: n.cidr, vni: vnis[n.name]!, mtu: n.mtu, vi: vi.name }));
  const containers = vi.containers.map((c) => {
    // A network's rules apply to every container on it, for what arrives on that network.
    const networkRules: IngressRule[] = c.networks.flatMap((a) => (vi.networks.find((n) => n.name === a.network)!.ingress ?? []).map((r) => ({ ...r, network: a.network })));
    const rules = c.ingress || networkRules.length ? [...(c.ingress ?? []), ...networkRules] : undefined;
    const [uid, gid] = c.user ? c.user.split(':').map(Number) : [];
    const names: PublicName[] = (vi.dns?.records ?? [])
      .filter((r) => r.container === c.name)
      .map((r) => ({ name: recordName(r.name, vi.dns!.zone)!, zone: fqdn(vi.dns!.zone), ttl: vi.dns!.ttl, dnsCloud: vi.dns!.cloud }));
    const spec: ContainerSpec = {
      name: c.name,
      vi: vi.name,
      interfaces: c.networks.map((a) => ({ network: a.network, ip: a.ip!, mac: a.mac! })),
      args: c.command,
      env: Object.entries(c.env).map(([k, v]) => `${k}=${v}`),
      cwd: c.workdir,
      ...(uid !== undefined ? { user: { uid, gid: gid ?? uid } } : {}),
      volumes: c.volumes.map((v) => ({ source: v.source, target: v.target, readOnly: v.readOnly })),
      readonlyRootfs: c.readonlyRootfs,
      ...(rules ? { ingress: rules } : {}),
      ...(c.floatingIp ? { floatingIp: { network: c.floatingIp.network ?? c.networks[0]!.network, ...(c.floatingIp.address ? { address: c.floatingIp.address } : {}) } } : {}),
      ...(names.length ? { publicNames: names } : {}),
    };
    return { spec, rootfs: c.rootfs };
  });
  return { networks, containers };
}

/** Every conflict between the VI and what the cloud has, without changing anything. */
async function findConflicts(cloud: Cloud, vi: ViSpec): Promise<{ problems: string[]; used: Record<string, UsedAddresses>; vnis: Record<string, number> }> {
  const { controlPlane, runtime } = cloud;
  const problems: string[] = [];
  const hosted = await controlPlane.listContainers();
  const networksHere = await controlPlane.listNetworks();
  const vnis: Record<string, number> = {};
  for (const n of vi.networks) {
    const existing = networksHere.find((e) => e.name === n.name);
    if (existing && existing.vi !== vi.name) problems.push(`network ${n.name} already exists in ${cloud.name}${existing.vi ? ` for VI ${existing.vi}` : ''}`);
    else if (existing && existing.cidr !== n.cidr) problems.push(`network ${n.name} of VI ${vi.name} exists in ${cloud.name} with ${existing.cidr}, not ${n.cidr}`);
    for (const other of networksHere.filter((e) => e.name !== n.name)) {
      if (cidrsOverlap(n.cidr, other.cidr)) problems.push(`networks.${n.name}: ${n.cidr} overlaps ${other.name} (${other.cidr}) in ${cloud.name}`);
    }
    let salt = 0;
    let vni = existing?.vni ?? networkVni(vi.name, n.name);
    while (!existing && networksHere.some((e) => e.vni === vni)) vni = networkVni(vi.name, n.name, ++salt);
    vnis[n.name] = vni;
  }
  for (const c of vi.containers) {
    const there = hosted[c.name];
    if (there && there.vi !== vi.name) problems.push(`a container named ${c.name} already exists in ${cloud.name}${there.vi ? ` (VI ${there.vi})` : ''}`);
    if (!there && (await runtime.status(c.name)) !== 'absent') problems.push(`the runtime of ${cloud.name} already has a container named ${c.name}`);
    if (!existsSync(c.rootfs)) problems.push(`containers.${c.name}.rootfs: ${c.rootfs} does not exist`);
    else if (!statSync(c.rootfs).isDirectory() && !/\.(tar|tar\.gz|tgz)$/.test(c.rootfs)) problems.push(`containers.${c.name}.rootfs: ${c.rootfs} is neither a directory nor a .tar/.tar.gz/.tgz`);
  }
  // Addresses other owners hold (this VI's own containers keep theirs on a repeated deploy).
  const mine = new Set(Object.values(hosted).filter((c) => c.vi === vi.name).map((c) => c.name));
  const used: Record<string, UsedAddresses> = {};
  const allMacs = new Map<string, string>();
  for (const n of networksHere) {
    for (const a of await controlPlane.addressesInUse(n.name)) if (!mine.has(a.owner)) allMacs.set(a.mac.toLowerCase(), a.owner);
  }
  for (const n of vi.networks) {
    const others = (await controlPlane.addressesInUse(n.name)).filter((a) => !mine.has(a.owner));
    used[n.name] = { ips: new Set(others.map((a) => a.ip)), macs: new Set(allMacs.keys()) };
  }
  for (const c of vi.containers) {
    for (const a of c.networks) {
      const holder = a.ip && (await controlPlane.addressesInUse(a.network)).find((u) => u.ip === a.ip && !mine.has(u.owner));
      if (holder) problems.push(`containers.${c.name}: ${a.ip} on ${a.network} is already ${holder.owner}'s in ${cloud.name}`);
      const macHolder = a.mac && allMacs.get(a.mac.toLowerCase());
      if (macHolder) problems.push(`containers.${c.name}: MAC ${a.mac} is already ${macHolder}'s in ${cloud.name}`);
    }
  }
  const held = await controlPlane.floatingIps();
  for (const c of vi.containers) {
    const wanted = c.floatingIp?.address;
    if (!wanted) continue;
    if (!cidrContains(controlPlane.floatingIpRange(), wanted)) problems.push(`containers.${c.name}.floatingIp.address: ${wanted} is outside ${cloud.name}'s floating-IP range ${controlPlane.floatingIpRange()}`);
    const owner = held.find((f) => f.address === wanted && f.container !== c.name);
    if (owner) problems.push(`containers.${c.name}.floatingIp.address: ${wanted} is already ${owner.container}'s in ${cloud.name}`);
  }
  return { problems, used, vnis };
}

/** A container's recorded addresses become fixed, so a repeated deploy gives it the same ones. */
function keepRecordedAddresses(vi: ViSpec, hosted: Record<string, ContainerSpec>): ViSpec {
  return {
    ...vi,
    containers: vi.containers.map((c) => {
      const there = hosted[c.name];
      if (!there || there.vi !== vi.name) return c;
      return { ...c, networks: c.networks.map((a) => ({ ...a, ...(a.ip || a.mac ? {} : pick(there, a.network)) })) };
    }),
  };
}

function pick(spec: ContainerSpec, network: string): { ip?: string; mac?: string } {
  const iface = spec.interfaces.find((i) => i.network === network);
  return iface ? { ip: iface.ip, mac: iface.mac } : {};
}

/**
 * Associates the container's floating IP in this cloud (the spec's address when it fixes one,
 * else one from the cloud's range) and returns the spec with the address it has here.
 */
export async function withFloatingIp(cloud: Cloud, spec: ContainerSpec): Promise<ContainerSpec> {
  if (!spec.floatingIp) return spec;
  const iface = spec.interfaces.find((i) => i.network === spec.floatingIp!.network) ?? spec.interfaces[0]!;
  const address = await cloud.controlPlane.associateFloatingIp({ container: spec.name, privateIp: iface.ip, ...(spec.floatingIp.address ? { address: spec.floatingIp.address } : {}) });
  return { ...spec, floatingIp: { network: iface.network, address } };
}

/** Deploys (or confirms) every network and container of the VI. */
export async function deployVi(cloud: Cloud, input: ViSpec, progress: (line: string) => void = () => {}): Promise<DeployOutcome> {
  const { controlPlane, runtime } = cloud;
  const hosted = await controlPlane.listContainers();
  const { problems, used, vnis } = await findConflicts(cloud, input);
  if (problems.length) throw new DeployConflict(problems);
  const vi = allocateAddresses(keepRecordedAddresses(input, hosted), used);
  const { networks, containers } = specsOf(vi, vnis);
  // A floating IP the file leaves to the cloud is whatever the cloud gave at the first deploy.
  const comparable = (spec: ContainerSpec, file: ContainerSpec) =>
    spec.floatingIp && file.floatingIp && !file.floatingIp.address ? { ...spec, floatingIp: { network: spec.floatingIp.network } } : spec;
  const changed = containers.filter(({ spec }) => hosted[spec.name] && JSON.stringify(comparable(hosted[spec.name]!, spec)) !== JSON.stringify(spec));
  if (changed.length) {
    throw new DeployConflict(changed.map(({ spec }) => `${spec.name} is deployed in ${cloud.name} with a different description; remove the VI first to change it`));
  }
  const outcome: DeployOutcome = { vi: vi.name, cloud: cloud.name, started: [], unchanged: [], networksCreated: [], containers: [] };
  for (const network of networks) {
    if ((await controlPlane.ensureNetwork(network)).created) outcome.networksCreated.push(network.name);
  }
  for (const { spec, rootfs } of containers) {
    const report = (placed: ContainerSpec) =>
      outcome.containers.push({
        name: spec.name,
        addresses: spec.interfaces.map((i) => `${i.network}:${i.ip}`),
        ...(placed.floatingIp?.address ? { floatingIp: placed.floatingIp.address } : {}),
        ...(placed.publicNames ? { publicNames: placed.publicNames } : {}),
      });
    if (hosted[spec.name] && (await runtime.status(spec.name)) === 'running') {
      report(await withFloatingIp(cloud, hosted[spec.name]!)); // converges a deploy that died half-way
      outcome.unchanged.push(spec.name);
      continue;
    }
    progress(`starting ${spec.name} (${spec.args.join(' ')})`);
    await controlPlane.ensurePort(spec);
    await controlPlane.setPortEnabled(spec.name, true);
    const placed = await withFloatingIp(cloud, spec);
    // Recorded before it runs: a deploy that dies in between is retried as this VI's own (and
    // converges), where a container running unrecorded would be refused as a stranger's.
    await controlPlane.registerContainer(placed);
    await runtime.run(spec, rootfs);
    report(placed);
    outcome.started.push(spec.name);
  }
  return outcome;
}

/** Removes the VI's containers, ports, rules and networks from the cloud; volumes only when asked. */
export async function removeVi(cloud: Cloud, name: string, opts: { deleteVolumes: boolean }): Promise<RemoveOutcome> {
  const { controlPlane, runtime } = cloud;
  const members = Object.values(await controlPlane.listContainers()).filter((c) => c.vi === name);
  const networks = (await controlPlane.listNetworks()).filter((n) => n.vi === name);
  if (!members.length && !networks.length) throw new DeployConflict([`no VI "${name}" in ${cloud.name}`]);
  const outcome: RemoveOutcome = { vi: name, cloud: cloud.name, containers: [], networks: [], volumesDeleted: [], volumesKept: [], publicNames: members.flatMap((c) => c.publicNames ?? []) };
  for (const c of members) {
    await controlPlane.releaseFloatingIp(c.name);
    await runtime.remove(c.name);
    await controlPlane.removePort(c.name);
    await controlPlane.unregisterContainer(c.name);
    outcome.containers.push(c.name);
    for (const v of c.volumes ?? []) {
      if (opts.deleteVolumes) {
        await rm(v.source, { recursive: true, force: true });
        outcome.volumesDeleted.push(v.source);
      } else outcome.volumesKept.push(v.source);
    }
  }
  for (const n of networks) {
    const stillUsed = (await controlPlane.addressesInUse(n.name)).length > 0;
    if (stillUsed) continue; // a port of something else (e.g. a client) is still on it
    await controlPlane.removeNetwork(n.name);
    outcome.networks.push(n.name);
  }
  return outcome;
}
