/**
 * Operations on one cloud — list what it hosts, deploy a VI into it, remove a VI from it — each
 * run by the worker that lives in that cloud, as every other cloud operation is.
 */
import type { Duration } from '@temporalio/common';
import { ApplicationFailure, proxyActivities } from '@temporalio/workflow';
import type { CloudActivities } from '../activities/cloud-activities';
import type { DeployOutcome, RemoveOutcome } from '../activities/deploy-vi';
import { cloudTaskQueue } from '../lib/plan';
import type { CloudListing } from '../lib/types';
import { parseViSpec, ViSpecError } from '../lib/vi-spec';

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
  // Copying root filesystems takes a while; a repeated deploy is quick and changes nothing.
  return cloudActivities(cloud, '15 minutes').deployVi({ vi: spec });
}

export async function removeVi(cloud: unknown, name: unknown, options: { deleteVolumes?: boolean } = {}): Promise<RemoveOutcome> {
  if (typeof name !== 'string') throw ApplicationFailure.nonRetryable(`not a VI name: ${JSON.stringify(name)}`, 'InvalidInput');
  return cloudActivities(cloud, '5 minutes').removeVi({ name, deleteVolumes: options.deleteVolumes === true });
}
