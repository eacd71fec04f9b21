/** What a cloud holds and whether a migration may start: inventory, listing, pre-flight checks, claims. */
import { ApplicationFailure } from '@temporalio/activity';
import type { CloudListing, Inventory, NetworkSpec } from '../lib/types';
import { claimContainers as claim, releaseClaims as release } from './claims';
import type { CloudContext } from './cloud-context';

/** Source side: which containers exist, on which networks, with which addresses. */
async function inventory(here: CloudContext, input: { vi?: string; containers?: string[] }): Promise<Inventory> {
  const { controlPlane, runtime } = here;
  const specs = await controlPlane.listContainers();
  let names = input.containers ?? [];
  if (input.vi) {
    const members = Object.values(specs).filter((c) => c.vi === input.vi).map((c) => c.name).sort();
    if (!members.length) {
      const vis = [...new Set(Object.values(specs).map((c) => c.vi).filter(Boolean))];
      throw ApplicationFailure.nonRetryable(`no VI "${input.vi}" in ${here.name} (it has: ${vis.join(', ') || 'none'})`, 'PreflightFailed');
    }
    const strangers = names.filter((name) => specs[name] && !members.includes(name));
    if (strangers.length) throw ApplicationFailure.nonRetryable(`container(s) ${strangers.join(', ')} in ${here.name} are not part of VI "${input.vi}" (${members.join(', ')})`, 'PreflightFailed');
    if (!input.containers) names = members;
  }
  const missing = names.filter((name) => !specs[name]);
  if (missing.length) {
    throw ApplicationFailure.nonRetryable(`container(s) ${missing.join(', ')} not found in ${here.name} (it has: ${Object.keys(specs).join(', ') || 'none'})`, 'PreflightFailed');
  }
  const containers = names.map((name) => specs[name]!);
  const networks: NetworkSpec[] = [];
  for (const name of new Set(containers.flatMap((c) => c.interfaces.map((i) => i.network)))) {
    const network = await controlPlane.getNetwork(name);
    if (!network) throw ApplicationFailure.nonRetryable(`network "${name}" is not known to ${here.name}`, 'PreflightFailed');
    networks.push(network);
  }
  for (const c of containers) {
    const status = await runtime.status(c.name);
    if (status !== 'running') throw ApplicationFailure.nonRetryable(`container ${c.name} in ${here.name} is ${status}, not running`, 'PreflightFailed');
  }
  return { source: controlPlane.endpoint, networks, containers };
}

/** What this cloud hosts: networks, and containers with their state read from the runtime. */
async function describeCloud(here: CloudContext, _input: Record<string, never>): Promise<CloudListing> {
  const { controlPlane, runtime } = here;
  const specs = Object.values(await controlPlane.listContainers()).sort((a, b) => a.name.localeCompare(b.name));
  const networks = (await controlPlane.listNetworks()).sort((a, b) => a.name.localeCompare(b.name));
  return {
    cloud: here.name,
    networks: await Promise.all(networks.map(async (n) => ({ name: n.name, ...(n.vi ? { vi: n.vi } : {}), cidr: n.cidr, stretchedTo: await controlPlane.stretchPeers(n.name) }))),
    containers: await Promise.all(
      specs.map(async (c) => ({
        name: c.name,
        ...(c.vi ? { vi: c.vi } : {}),
        addresses: c.interfaces.map((i) => `${i.network}:${i.ip}`),
        ...(c.floatingIp?.address ? { floatingIp: c.floatingIp.address } : {}),
        status: await runtime.status(c.name),
      })),
    ),
    floatingRange: controlPlane.floatingIpRange(),
  };
}

/** Both sides: can this host checkpoint/restore, and would the move collide with anything? */
async function preflight(here: CloudContext, input: { role: 'source' | 'destination'; inventory: Inventory }): Promise<{ cloud: string; publicIp: string }> {
  const problems = await here.runtime.preflight();
  if (input.role === 'destination') problems.push(...(await collisions(here, input.inventory)));
  if (problems.length) {
    throw ApplicationFailure.nonRetryable(`pre-flight checks failed in ${here.name} (${input.role}):\n- ${problems.join('\n- ')}`, 'PreflightFailed');
  }
  return { cloud: here.name, publicIp: here.controlPlane.endpoint.publicIp };
}

/** What at this destination would collide with the VI: containers, addresses, networks. */
async function collisions(here: CloudContext, inventory: Inventory): Promise<string[]> {
  const { controlPlane, runtime } = here;
  const problems: string[] = [];
  const specs = await controlPlane.listContainers();
  for (const c of inventory.containers) {
    if (specs[c.name]) problems.push(`a container named ${c.name} already exists in ${here.name}`);
    const status = await runtime.status(c.name);
    if (status !== 'absent') problems.push(`runtime of ${here.name} already has a container ${c.name} (${status})`);
    for (const iface of c.interfaces) {
      for (const used of await controlPlane.addressesInUse(iface.network)) {
        if (used.owner !== c.name && (used.ip === iface.ip || used.mac.toLowerCase() === iface.mac.toLowerCase())) {
          problems.push(`${c.name}'s address ${iface.ip}/${iface.mac} is already used by ${used.owner} on ${iface.network} in ${here.name}`);
        }
      }
    }
  }
  const existing = await controlPlane.listNetworks();
  for (const n of inventory.networks) {
    const same = existing.find((e) => e.name === n.name);
    if (same && same.cidr !== n.cidr) problems.push(`network ${n.name} exists in ${here.name} with CIDR ${same.cidr}, not ${n.cidr}`);
    if (same && same.vi !== n.vi) problems.push(`network ${n.name} exists in ${here.name} for ${same.vi ? `VI ${same.vi}` : 'another VI'}`);
    const sameVni = existing.find((e) => e.name !== n.name && e.vni === n.vni);
    if (sameVni) problems.push(`network ${sameVni.name} in ${here.name} uses VXLAN id ${n.vni}, which ${n.name} needs`);
  }
  return problems;
}

/**
 * Source: reserve the containers for this migration; a concurrent migration of any of them is
 * refused. Returns the stale claims taken over from migrations that are no longer running.
 */
async function claimContainers(here: CloudContext, input: { migrationId: string; workflowId: string; containers: string[] }): Promise<string[]> {
  try {
    return await claim(here.cloud.workDir, input, input.containers, here.options.workflowIsRunning);
  } catch (err) {
    throw ApplicationFailure.nonRetryable((err as Error).message, 'AlreadyMigrating');
  }
}

async function releaseClaims(here: CloudContext, input: { migrationId: string; containers: string[] }): Promise<void> {
  await release(here.cloud.workDir, input.migrationId, input.containers);
}

export const inventoryActivities = { inventory, describeCloud, preflight, claimContainers, releaseClaims };
