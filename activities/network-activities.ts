/**
 * The VI's networks and public addresses at one cloud: replicated, stretched to the peer over the
 * WAN, released; the outside connections open through a floating IP, and the routing of their
 * replies while they drain.
 */
import { ApplicationFailure } from '@temporalio/activity';
import type { NetworkSpec, PublicConnection } from '../lib/types';
import type { CloudContext, ContainerStep } from './cloud-context';

/** Destination: same networks (CIDR, VNI, MTU) as the source. Returns those it created. */
async function replicateNetworks(here: CloudContext, input: { networks: NetworkSpec[] }): Promise<string[]> {
  const created: string[] = [];
  for (const network of input.networks) {
    if ((await here.controlPlane.ensureNetwork(network)).created) created.push(network.name);
  }
  return created;
}

async function removeNetworks(here: CloudContext, input: { names: string[] }): Promise<void> {
  for (const name of input.names) await here.controlPlane.removeNetwork(name);
}

/**
 * Either side: joins this cloud's copy of each network to the peer's over the WAN. Returns the
 * networks newly stretched, so that a rollback undoes only what this migration did.
 */
async function stretchNetworks(here: CloudContext, input: { networks: NetworkSpec[]; peerPublicIp: string }): Promise<NetworkSpec[]> {
  const created: NetworkSpec[] = [];
  for (const network of input.networks) {
    if ((await here.controlPlane.ensureStretch(network, input.peerPublicIp)).created) created.push(network);
  }
  here.log(`stretched ${input.networks.map((n) => n.name).join(', ')} to ${input.peerPublicIp}`);
  return created;
}

/**
 * Source, after the last group moved: a network no port here uses any more (the VI has left)
 * is unstretched and removed, its bridge and tunnel with it. Returns those released; a network
 * still in use here (part of the VI stayed, or anything else is plugged in) keeps its stretch.
 */
async function releaseNetworks(here: CloudContext, input: { networks: NetworkSpec[]; peerPublicIp: string }): Promise<NetworkSpec[]> {
  const released: NetworkSpec[] = [];
  for (const network of input.networks) {
    const users = await here.controlPlane.addressesInUse(network.name);
    if (users.length) {
      here.log(`keeping ${network.name}: still used here by ${[...new Set(users.map((u) => u.owner))].join(', ')}`);
      continue;
    }
    await here.controlPlane.removeStretch(network, input.peerPublicIp);
    await here.controlPlane.removeNetwork(network.name);
    released.push(network);
  }
  return released;
}

async function unstretchNetworks(here: CloudContext, input: { networks: NetworkSpec[]; peerPublicIp: string }): Promise<void> {
  for (const network of input.networks) await here.controlPlane.removeStretch(network, input.peerPublicIp);
}

/** Source, inside the freeze: the outside connections open through the container's floating IP. */
async function publicConnections(here: CloudContext, input: ContainerStep): Promise<PublicConnection[]> {
  return here.controlPlane.openPublicConnections(input.container.name);
}

/** Destination: replies of the source's open public connections leave through the source's edge (empty list: no more). */
async function routeReplies(here: CloudContext, input: ContainerStep & { connections: PublicConnection[]; peerPublicIp: string }): Promise<void> {
  await here.controlPlane.routeRepliesVia(input.container.name, input.connections, input.peerPublicIp);
}

/** Source, at the end of the drain: the old floating IP goes (and with it the forwarding of what was open through it). */
async function releasePublicAddress(here: CloudContext, input: ContainerStep): Promise<void> {
  if ((await here.controlPlane.listContainers())[input.container.name]) throw ApplicationFailure.nonRetryable(`${input.container.name} runs in ${here.name}: its floating IP stays`, 'Refused');
  await here.controlPlane.releaseFloatingIp(input.container.name);
}

export const networkActivities = { replicateNetworks, removeNetworks, stretchNetworks, releaseNetworks, unstretchNetworks, publicConnections, routeReplies, releasePublicAddress };
