/**
 * The embedded world must not cut the host off (issue 7, PLATFORM.md): a testbed puts only one
 * small link in the host's own network namespace, and refuses, before creating anything, a link
 * range that overlaps an address, a route or a resolver the host uses.
 */
import { readFile } from 'node:fs/promises';
import { ip } from '../../lib/exec';
import { cidrsOverlap, intToIp, parseCidr } from '../../lib/vi-spec';

export interface HostNetworkFacts {
  /** The host's own addresses with their prefixes, e.g. "192.0.2.2/24 on eth0". */
  addresses: Array<{ cidr: string; dev: string }>;
  /** Destinations of the host's routes (the default route excluded: it overlaps everything). */
  routes: Array<{ dst: string; dev: string }>;
  /** Name servers the host resolves with. */
  resolvers: string[];
}

/** What the host's root namespace uses: read from the kernel and /etc/resolv.conf. */
export async function readHostNetworkFacts(): Promise<HostNetworkFacts> {
  const addrs = JSON.parse((await ip(['-j', 'addr', 'show'])).stdout) as Array<{ ifname: string; addr_info: Array<{ family: string; local: string; prefixlen: number; scope: string }> }>;
  const addresses = addrs.flatMap((link) =>
    link.addr_info.filter((a) => a.family === 'inet' && a.scope !== 'host').map((a) => ({ cidr: `${a.local}/${a.prefixlen}`, dev: link.ifname })),
  );
  const routeList = JSON.parse((await ip(['-j', 'route', 'show'])).stdout) as Array<{ dst: string; dev?: string }>;
  const routes = routeList.filter((r) => r.dst !== 'default').map((r) => ({ dst: r.dst.includes('/') ? r.dst : `${r.dst}/32`, dev: r.dev ?? '?' }));
  const resolvConf = await readFile('/etc/resolv.conf', 'utf8').catch(() => '');
  const resolvers = [...resolvConf.matchAll(/^\s*nameserver\s+(\d+\.\d+\.\d+\.\d+)\s*$/gm)].map((m) => m[1]!);
  return { addresses, routes, resolvers };
}

/** Every way `cidr` (named `what`) would collide with the host; empty when it is safe. */
export function hostConflicts(what: string, cidr: string, facts: HostNetworkFacts): string[] {
  const problems: string[] = [];
  for (const a of facts.addresses) {
    const { net, prefix } = parseCidr(a.cidr)!;
    const subnet = `${intToIp(net)}/${prefix}`;
    if (cidrsOverlap(cidr, subnet)) problems.push(`${what} ${cidr} overlaps the host's address ${a.cidr} on ${a.dev}`);
  }
  for (const r of facts.routes) {
    if (cidrsOverlap(cidr, r.dst)) problems.push(`${what} ${cidr} overlaps the host's route to ${r.dst} (dev ${r.dev})`);
  }
  for (const resolver of facts.resolvers) {
    if (cidrsOverlap(cidr, `${resolver}/32`)) problems.push(`${what} ${cidr} contains the host's resolver ${resolver}`);
  }
  return problems;
}

/** The two ends of a /30 link: the host's side and the WAN namespace's side. */
export function linkEnds(cidr: string): { host: string; wan: string; prefix: number } {
  const parsed = parseCidr(cidr);
  if (!parsed || parsed.hostBits !== 0 || parsed.prefix > 30) throw new Error(`host link ${cidr} must be a network of at least 4 addresses, e.g. 198.18.0.0/30`);
  return { host: intToIp(parsed.net + 1), wan: intToIp(parsed.net + 2), prefix: parsed.prefix };
}

