/**
 * Operations on one cloud — list what it hosts, deploy a VI into it, remove a VI from it — each
 * run by the worker that lives in that cloud, as every other cloud operation is.
 */
import type { Duration } from '@temporalio/common';
import { ApplicationFailure, proxyActivities } from '@temporalio/workflow';
import type { CloudActivities } from '../activities/cloud-activities';
import type { DeployOutcome, RemoveOutcome } from '../activities/deploy-vi';
import { cloudTaskQueue } from '../lib/plan';
import type { CloudListing, DnsRecord } from '../lib/types';
import { fqdn, parseViSpec, recordName, ViSpecError } from '../lib/vi-spec';

function cloudActivities(cloud: unknown, startToCloseTimeout: Duration) {
  if (typeof cloud !== 'string' || !/^[a-z][a-z0-9-]{0,15}$/.test(cloud)) {
    throw ApplicationFailure.nonRetryable(`not a cloud name: ${JSON.stringify(cloud)}`, 'InvalidInput');
  }
  return proxyActivities<CloudActivities>({
    taskQueue: cloudTaskQueue(cloud),
    // Nobody answers for a cloud without a worker: say so in seconds.
    scheduleToStartTimeout: '15 seconds',
    startToCloseTimeout,
    retry: { maximumAttempts: 2 },
  });
}

export async function listCloud(cloud: unknown): Promise<CloudListing> {
  return cloudActivities(cloud, '30 seconds').describeCloud({});
}

/** Deploys a VI description (validated again here: the workflow may be started by anyone). */
export async function deployVi(cloud: unknown, vi: unknown): Promise<DeployOutcome> {
  let spec;
  try {
    spec = parseViSpec(vi);
  } catch (err) {
    if (err instanceof ViSpecError) throw ApplicationFailure.nonRetryable(err.message, 'InvalidInput');
    throw err;
  }
  const zone = spec.dns ? fqdn(spec.dns.zone) : undefined;
  if (spec.dns && zone) {
    // Before anything changes: the zone is the DNS cloud's, and the names are free (or this VI's).
    const here = await cloudActivities(cloud, '30 seconds').describeCloud({});
    const allowedAddresses = here.containers.filter((c) => c.vi === spec.name && c.floatingIp).map((c) => c.floatingIp!);
    const names = spec.dns.records.map((r) => recordName(r.name, zone)!);
    await cloudActivities(spec.dns.cloud, '30 seconds').checkDnsNames({ zone, names, allowedAddresses });
  }
  // Copying root filesystems takes a while; a repeated deploy is quick and changes nothing.
  const outcome = await cloudActivities(cloud, '15 minutes').deployVi({ vi: spec });
  if (spec.dns && zone) {
    const records = new Map<string, DnsRecord>();
    for (const c of outcome.containers) {
      for (const n of c.publicNames ?? []) {
        const record = records.get(n.name) ?? { name: n.name, ttl: n.ttl, addresses: [] };
        if (c.floatingIp) record.addresses.push(c.floatingIp);
        records.set(n.name, record);
      }
    }
    await cloudActivities(spec.dns.cloud, '30 seconds').setDnsRecords({ zone, records: [...records.values()] });
  }
  return outcome;
}

export async function removeVi(cloud: unknown, name: unknown, options: { deleteVolumes?: boolean } = {}): Promise<RemoveOutcome> {
  if (typeof name !== 'string') throw ApplicationFailure.nonRetryable(`not a VI name: ${JSON.stringify(name)}`, 'InvalidInput');
  const outcome = await cloudActivities(cloud, '5 minutes').removeVi({ name, deleteVolumes: options.deleteVolumes === true });
  // Its public names go with it, through the cloud that serves each zone.
  const byZone = new Map<string, { cloud: string; zone: string; names: Set<string> }>();
  for (const n of outcome.publicNames) {
    const key = `${n.dnsCloud}/${n.zone}`;
    const entry = byZone.get(key) ?? { cloud: n.dnsCloud, zone: n.zone, names: new Set<string>() };
    entry.names.add(n.name);
    byZone.set(key, entry);
  }
  for (const { cloud: dnsCloud, zone, names } of byZone.values()) await cloudActivities(dnsCloud, '30 seconds').deleteDnsRecords({ zone, names: [...names] });
  return outcome;
}
