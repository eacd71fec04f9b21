/** Deploying and removing a VI from its description, and the DNS records of its public names. */
import { ApplicationFailure } from '@temporalio/activity';
import type { DnsRecord } from '../lib/types';
import { parseViSpec, ViSpecError, type ViSpec } from '../lib/vi-spec';
import type { Attempt } from './attempt';
import type { CloudContext } from './cloud-context';
import { DeployConflict, deployVi as deploy, removeVi as remove, type DeployOutcome, type RemoveOutcome } from './deploy-vi';

/** Deploys a VI description here (validated at the edge; conflicts refused before anything changes). */
async function deployVi(here: CloudContext, input: { vi: ViSpec }, attempt: Attempt): Promise<DeployOutcome> {
  try {
    return await deploy(here.cloud, parseViSpec(input.vi), (line) => {
      here.log(line);
      attempt.progress();
    });
  } catch (err) {
    if (err instanceof DeployConflict || err instanceof ViSpecError) throw ApplicationFailure.nonRetryable(err.message, 'DeployConflict');
    throw err;
  }
}

/** Removes a VI's containers, ports, rules and networks here (its volumes only when asked). */
async function removeVi(here: CloudContext, input: { name: string; deleteVolumes: boolean }): Promise<RemoveOutcome> {
  try {
    return await remove(here.cloud, input.name, { deleteVolumes: input.deleteVolumes });
  } catch (err) {
    if (err instanceof DeployConflict) throw ApplicationFailure.nonRetryable(err.message, 'NotFound');
    throw err;
  }
}

/**
 * DNS cloud, before a deploy changes anything: the zone is served here, and none of the names
 * points elsewhere than the VI's own floating IPs (a repeated deploy keeps its records).
 */
async function checkDnsNames(here: CloudContext, input: { zone: string; names: string[]; allowedAddresses: string[] }): Promise<void> {
  const zones = await here.controlPlane.dnsZones();
  if (!zones.includes(input.zone)) {
    throw ApplicationFailure.nonRetryable(`dns.zone: ${input.zone} is not served by ${here.name}'s DNS (it serves: ${zones.join(', ') || 'nothing'})`, 'DeployConflict');
  }
  const records = await here.controlPlane.dnsRecords(input.zone);
  const taken = records.filter((r) => input.names.includes(r.name) && r.addresses.some((a) => !input.allowedAddresses.includes(a)));
  if (taken.length) {
    throw ApplicationFailure.nonRetryable(`dns.records: ${taken.map((r) => `${r.name} already points to ${r.addresses.join(', ')}`).join('; ')}`, 'DeployConflict');
  }
}

/** DNS cloud: replaces the A records of these names (all or none). */
async function setDnsRecords(here: CloudContext, input: { zone: string; records: DnsRecord[] }): Promise<void> {
  await here.controlPlane.setDnsRecords(input.zone, input.records);
  here.log(`DNS ${input.zone}: ${input.records.map((r) => `${r.name} → ${r.addresses.join(', ')}`).join('; ')}`);
}

async function deleteDnsRecords(here: CloudContext, input: { zone: string; names: string[] }): Promise<void> {
  await here.controlPlane.deleteDnsRecords(input.zone, input.names);
}

export const viActivities = { deployVi, removeVi, checkDnsNames, setDnsRecords, deleteDnsRecords };
