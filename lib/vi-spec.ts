/**
 * The virtual-infrastructure (VI) description: what a user declares to deploy a VI into a cloud
 * and later move it — private networks, containers with their root filesystem, command,
 * environment, volumes and addresses, and ingress rules. One schema (zod), validated at the edge
 * by every entry point; each problem is named by its field path. Pure code (no Node builtins):
 * workflows may validate with it too.
 */
import { z } from 'zod';
import { cloudName, containerName, networkName, viName } from './names';
import { problemsOf } from './schema-problems';

const absolutePath = z.string().regex(/^\/(?!.*(^|\/)\.\.?(\/|$)).*$/, 'an absolute path without "." or ".." parts');
const ipv4 = z.string().regex(/^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/, 'an IPv4 address, e.g. 10.0.1.10');
const cidr = z.string().regex(/^(\d{1,3}\.){3}\d{1,3}\/([0-9]|[12]\d|3[0-2])$/, 'an IPv4 CIDR, e.g. 10.0.1.0/24');
const mac = z
  .string()
  .regex(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i, 'a MAC address, e.g. 02:00:0a:00:01:0a')
  .refine((m) => (parseInt(m.slice(0, 2), 16) & 1) === 0, 'a unicast MAC address (first octet even)');

/** Allowed inbound traffic: everything else to the container (or network) is dropped. */
const ingressRule = z
  .object({
    /** A port or a range "8000-8099". */
    port: z.union([z.number().int().min(1).max(65535), z.string().regex(/^\d{1,5}-\d{1,5}$/, 'a port range "low-high"')]),
    protocol: z.enum(['tcp', 'udp']).default('tcp'),
    /** Source addresses allowed (CIDR); any when absent. */
    from: cidr.default('0.0.0.0/0'),
  })
  .strict();

const attachment = z
  .object({
    network: networkName,
    /** Fixed address; allocated (and recorded) at deploy when absent. */
    ip: ipv4.optional(),
    mac: mac.optional(),
  })
  .strict();

const volume = z
  .object({
    /** Host directory holding the volume's files (created empty when absent). */
    source: absolutePath,
    /** Mount point in the container. */
    target: absolutePath,
    readOnly: z.boolean().default(false),
  })
  .strict();

const container = z
  .object({
    name: containerName,
    /** A directory, or a tarball (.tar, .tar.gz, .tgz) of the root filesystem, on the deploying host. */
    rootfs: absolutePath,
    /** Program and arguments. */
    command: z.array(z.string()).min(1, 'the command names at least the program to run'),
    env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'an environment variable name'), z.string()).default({}),
    workdir: absolutePath.default('/'),
    /** Numeric "uid" or "uid:gid" the program runs as (default root); servers such as PostgreSQL refuse root. */
    user: z.string().regex(/^\d{1,9}(:\d{1,9})?$/, 'a numeric "uid" or "uid:gid", e.g. "101:103"').optional(),
    networks: z.array(attachment).min(1, 'a container is attached to at least one network'),
    volumes: z.array(volume).default([]),
    /**
     * A public address from the cloud's floating-IP range, NATed to the container's address on
     * `network` (default: its first). `address` fixes it in the cloud it is deployed to (another
     * cloud it moves to gives it one of its own).
     */
    floatingIp: z.object({ network: networkName.optional(), address: ipv4.optional() }).strict().optional(),
    /** The rootfs never changes: it can be copied while the container runs. */
    readonlyRootfs: z.boolean().default(false),
    ingress: z.array(ingressRule).optional(),
  })
  .strict();

const network = z
  .object({
    name: networkName,
    cidr,
    // 1390: a frame that fits VXLAN (50 bytes) inside WireGuard (60) inside a 1500-byte WAN, unfragmented.
    mtu: z.number().int().min(576).max(9000).default(1390),
    /** Allowed inbound traffic to every container on this network (added to each container's own rules). */
    ingress: z.array(ingressRule).optional(),
  })
  .strict();

const dnsName = z.string().regex(/^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.?$/, 'a DNS name: labels of letters, digits and "-"');

/** The VI's public names: A records to its containers' floating IPs, in a zone a cloud's DNS serves. */
const dns = z
  .object({
    /** e.g. "vi.example." */
    zone: dnsName,
    /** The cloud whose DNS service serves the zone; its worker manages the records, wherever the VI runs. */
    cloud: cloudName,
    /** Short, so that clients follow a migration's switch quickly. */
    ttl: z.number().int().min(1).max(86_400).default(5),
    records: z.array(z.object({ name: dnsName, container: containerName }).strict()).min(1, 'a zone without records has nothing to serve'),
  })
  .strict();

export const viSpecSchema = z
  .object({
    name: viName,
    networks: z.array(network).min(1, 'a VI has at least one private network'),
    containers: z.array(container).min(1, 'a VI has at least one container'),
    dns: dns.optional(),
  })
  .strict()
  .superRefine((vi, ctx) => {
    const problem = (path: Array<string | number>, message: string) => ctx.addIssue({ code: 'custom', path, message });
    const networks = new Map<string, { net: number; prefix: number }>();
    for (const [i, n] of vi.networks.entries()) {
      const parsed = parseCidr(n.cidr);
      if (!parsed) {
        problem(['networks', i, 'cidr'], `${n.cidr} is not a valid CIDR`);
        continue;
      }
      if (parsed.prefix < 8 || parsed.prefix > 29) problem(['networks', i, 'cidr'], `prefix /${parsed.prefix} is outside /8../29`);
      if (parsed.hostBits !== 0) problem(['networks', i, 'cidr'], `${n.cidr} has host bits set (the network is ${intToIp(parsed.net)}/${parsed.prefix})`);
      if (networks.has(n.name)) problem(['networks', i, 'name'], `network "${n.name}" is declared twice`);
      for (const [other, o] of networks) {
        if (overlaps(parsed, o)) problem(['networks', i, 'cidr'], `${n.cidr} overlaps network "${other}"`);
      }
      networks.set(n.name, parsed);
    }
    const containerNames = new Set<string>();
    const ips = new Map<string, string>();
    const macs = new Map<string, string>();
    for (const [i, c] of vi.containers.entries()) {
      if (containerNames.has(c.name)) problem(['containers', i, 'name'], `container "${c.name}" is declared twice`);
      containerNames.add(c.name);
      const attached = new Set<string>();
      for (const [j, a] of c.networks.entries()) {
        const where = ['containers', i, 'networks', j];
        const net = networks.get(a.network);
        if (!vi.networks.some((n) => n.name === a.network)) problem([...where, 'network'], `no network "${a.network}" in this VI (it has: ${vi.networks.map((n) => n.name).join(', ')})`);
        if (attached.has(a.network)) problem([...where, 'network'], `${c.name} is attached to "${a.network}" twice`);
        attached.add(a.network);
        if (a.ip && net) {
          const ip = ipToInt(a.ip);
          const size = 2 ** (32 - net.prefix);
          if (ip < net.net || ip >= net.net + size) problem([...where, 'ip'], `${a.ip} is not in ${a.network} (${intToIp(net.net)}/${net.prefix})`);
          else if (ip === net.net || ip === net.net + size - 1) problem([...where, 'ip'], `${a.ip} is the network or broadcast address of ${a.network}`);
          const key = `${a.network}/${a.ip}`;
          if (ips.has(key)) problem([...where, 'ip'], `${a.ip} is already ${ips.get(key)}'s address on ${a.network}`);
          ips.set(key, c.name);
        }
        if (a.mac) {
          const key = a.mac.toLowerCase();
          if (macs.has(key)) problem([...where, 'mac'], `${a.mac} is already ${macs.get(key)}'s MAC`);
          macs.set(key, c.name);
        }
      }
      if (c.floatingIp?.network && !c.networks.some((a) => a.network === c.floatingIp!.network)) {
        problem(['containers', i, 'floatingIp', 'network'], `${c.name} is not attached to "${c.floatingIp.network}"`);
      }
      const targets = new Set<string>();
      for (const [j, v] of c.volumes.entries()) {
        if (v.target === '/') problem(['containers', i, 'volumes', j, 'target'], 'a volume cannot be mounted on /');
        if (targets.has(v.target)) problem(['containers', i, 'volumes', j, 'target'], `two volumes are mounted on ${v.target}`);
        targets.add(v.target);
      }
      checkRules(c.ingress ?? [], ['containers', i, 'ingress'], problem);
    }
    for (const [i, n] of vi.networks.entries()) checkRules(n.ingress ?? [], ['networks', i, 'ingress'], problem);
    if (vi.dns) {
      const zone = fqdn(vi.dns.zone);
      const seen = new Set<string>();
      for (const [i, r] of vi.dns.records.entries()) {
        const name = recordName(r.name, zone);
        if (!name) problem(['dns', 'records', i, 'name'], `${r.name} is outside the VI's zone ${zone}`);
        else if (seen.has(name)) problem(['dns', 'records', i, 'name'], `${name} is declared twice`);
        if (name) seen.add(name);
        const target = vi.containers.find((c) => c.name === r.container);
        if (!target) problem(['dns', 'records', i, 'container'], `no container "${r.container}" in this VI`);
        else if (!target.floatingIp) problem(['dns', 'records', i, 'container'], `${r.container} has no floatingIp: a public name needs a public address`);
      }
    }
  });

/** "a.b" → "a.b." */
export function fqdn(name: string): string {
  return name.endsWith('.') ? name.toLowerCase() : `${name.toLowerCase()}.`;
}

/**
 * A record's fully qualified name: a relative name is in the zone ("www" → "www.vi.example."), a
 * fully qualified one (ending with ".") must be in it; undefined when it is outside the zone.
 */
export function recordName(name: string, zone: string): string | undefined {
  const z = fqdn(zone);
  if (!name.endsWith('.')) return `${name.toLowerCase()}.${z}`;
  const full = name.toLowerCase();
  return full === z || full.endsWith(`.${z}`) ? full : undefined;
}

function checkRules(rules: Array<z.output<typeof ingressRule>>, path: Array<string | number>, problem: (path: Array<string | number>, message: string) => void): void {
  for (const [k, r] of rules.entries()) {
    if (typeof r.port === 'string') {
      const [low, high] = r.port.split('-').map(Number) as [number, number];
      if (!(low >= 1 && high <= 65535 && low <= high)) problem([...path, k, 'port'], `${r.port} is not a port range within 1-65535, low to high`);
    }
    const from = parseCidr(r.from);
    if (!from) problem([...path, k, 'from'], `${r.from} is not a valid CIDR`);
    else if (from.hostBits !== 0) problem([...path, k, 'from'], `${r.from} has host bits set`);
  }
}

export type ViSpec = z.output<typeof viSpecSchema>;
export type ViSpecInput = z.input<typeof viSpecSchema>;
export type ViContainer = ViSpec['containers'][number];

export class ViSpecError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid VI description:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ViSpecError';
  }
}

/** Validates untrusted input; throws a ViSpecError listing every problem with its path. */
export function parseViSpec(input: unknown): ViSpec {
  const result = viSpecSchema.safeParse(input);
  if (result.success) return result.data;
  throw new ViSpecError(problemsOf(result.error, '(VI)'));
}

/** Addresses already taken on a network (by this VI or others in the cloud). */
export interface UsedAddresses {
  ips: Set<string>;
  macs: Set<string>;
}

/**
 * Gives every attachment without an address one: the first free host address of its network from
 * .10 up (the low ones stay for gateways and services a cloud may add), and a locally
 * administered MAC derived from the VI and the address, so a redeploy gets the same one. Fixed
 * addresses are kept; `used` (per network) is what the cloud already has. Pure: returns a new VI.
 */
export function allocateAddresses(vi: ViSpec, used: Record<string, UsedAddresses> = {}): ViSpec {
  const taken = (network: string): UsedAddresses => {
    const u = used[network] ?? { ips: new Set<string>(), macs: new Set<string>() };
    return { ips: new Set(u.ips), macs: new Set([...u.macs].map((m) => m.toLowerCase())) };
  };
  const byNetwork = new Map(vi.networks.map((n) => [n.name, taken(n.name)]));
  for (const c of vi.containers) {
    for (const a of c.networks) {
      if (a.ip) byNetwork.get(a.network)!.ips.add(a.ip);
      if (a.mac) for (const u of byNetwork.values()) u.macs.add(a.mac.toLowerCase());
    }
  }
  const containers = vi.containers.map((c) => ({
    ...c,
    networks: c.networks.map((a) => {
      const net = parseCidr(vi.networks.find((n) => n.name === a.network)!.cidr)!;
      const u = byNetwork.get(a.network)!;
      let ip = a.ip;
      if (!ip) {
        const size = 2 ** (32 - net.prefix);
        for (let host = Math.min(10, size - 2); host < size - 1 && !ip; host++) {
          const candidate = intToIp(net.net + host);
          if (!u.ips.has(candidate)) ip = candidate;
        }
        for (let host = 1; host < Math.min(10, size - 2) && !ip; host++) {
          const candidate = intToIp(net.net + host);
          if (!u.ips.has(candidate)) ip = candidate;
        }
        if (!ip) throw new ViSpecError([`network ${a.network} (${vi.networks.find((n) => n.name === a.network)!.cidr}) has no free address left for ${c.name}`]);
        u.ips.add(ip);
      }
      let macAddress = a.mac?.toLowerCase();
      for (let salt = 0; !macAddress; salt++) {
        const candidate = derivedMac(`${vi.name}/${a.network}/${salt}`, ip);
        if (![...byNetwork.values()].some((n) => n.macs.has(candidate))) macAddress = candidate;
      }
      for (const n of byNetwork.values()) n.macs.add(macAddress);
      return { ...a, ip, mac: macAddress };
    }),
  }));
  return { ...vi, containers };
}

/** 02:<1 byte of the seed's hash>:<the 4 bytes of the address>: locally administered, unicast. */
function derivedMac(seed: string, ip: string): string {
  let h = 2166136261;
  for (const ch of seed) h = Math.imul(h ^ ch.charCodeAt(0), 16777619) >>> 0;
  const bytes = [0x02, h & 0xff, ...ip.split('.').map(Number)];
  return bytes.map((b) => b.toString(16).padStart(2, '0')).join(':');
}

export function ipToInt(ip: string): number {
  return ip.split('.').reduce((acc, octet) => acc * 256 + Number(octet), 0);
}

export function intToIp(value: number): string {
  return [value >>> 24, (value >>> 16) & 255, (value >>> 8) & 255, value & 255].join('.');
}

/** Parses "a.b.c.d/p"; undefined when malformed. `hostBits` is the part below the prefix. */
export function parseCidr(text: string): { net: number; prefix: number; hostBits: number } | undefined {
  const [address, prefixText] = text.split('/');
  if (!address || prefixText === undefined) return undefined;
  const octets = address.split('.').map(Number);
  const prefix = Number(prefixText);
  if (octets.length !== 4 || octets.some((o) => !Number.isInteger(o) || o < 0 || o > 255) || !Number.isInteger(prefix) || prefix < 0 || prefix > 32) return undefined;
  const value = ipToInt(address);
  const size = 2 ** (32 - prefix);
  const net = value - (value % size);
  return { net, prefix, hostBits: value - net };
}

/** Whether two CIDRs share an address (false when either is malformed). */
export function cidrsOverlap(a: string, b: string): boolean {
  const x = parseCidr(a);
  const y = parseCidr(b);
  return !!x && !!y && overlaps(x, y);
}

/** Whether an IPv4 address lies inside a CIDR. */
export function cidrContains(cidr: string, address: string): boolean {
  return cidrsOverlap(cidr, `${address}/32`);
}

function overlaps(a: { net: number; prefix: number }, b: { net: number; prefix: number }): boolean {
  const aEnd = a.net + 2 ** (32 - a.prefix);
  const bEnd = b.net + 2 ** (32 - b.prefix);
  return a.net < bEnd && b.net < aEnd;
}
