/**
 * Lists what a cloud hosts (VIs, networks, containers and where each runs), asked of the worker
 * that lives in that cloud, as every other cloud operation is.
 */
import { ApplicationFailure, proxyActivities } from '@temporalio/workflow';
import type { CloudActivities } from '../activities/cloud-activities';
import { cloudTaskQueue } from '../lib/plan';
import type { CloudListing } from '../lib/types';

export async function listCloud(cloud: unknown): Promise<CloudListing> {
  if (typeof cloud !== 'string' || !/^[a-z][a-z0-9-]{0,15}$/.test(cloud)) {
    throw ApplicationFailure.nonRetryable(`not a cloud name: ${JSON.stringify(cloud)}`, 'InvalidInput');
  }
  const { describeCloud } = proxyActivities<CloudActivities>({
    taskQueue: cloudTaskQueue(cloud),
    // Nobody answers for a cloud without a worker: say so in seconds.
    scheduleToStartTimeout: '15 seconds',
    startToCloseTimeout: '30 seconds',
    retry: { maximumAttempts: 2 },
  });
  return describeCloud({});
}
