/**
 * The activities one cloud worker runs, bound to that cloud — the whole set, assembled here from
 * the modules that each own one part of the move. The workflow calls them through the cloud's
 * task queue, so each runs next to the resources it touches. Every activity is idempotent *and
 * complete* on retry: Temporal may run it again after a worker crash or a lost result, and the
 * retry finishes whatever the earlier attempt left undone (activities/attempt.ts runs each
 * attempt: progress heartbeats, stall detection, superseding, fault points).
 *
 * Nothing here knows which provider the cloud is: activities see only providers/provider.ts.
 */
import type { Cloud } from '../providers/provider';
import { runAttempt, type Attempt } from './attempt';
import { checkpointActivities, sourceActivities } from './checkpoint-activities';
import { CloudContext, type CloudActivityOptions, type ContainerStep } from './cloud-context';
import { copyActivities } from './copy-activities';
import { inventoryActivities } from './inventory-activities';
import { networkActivities } from './network-activities';
import { postCopyActivities } from './post-copy-activities';
import { predictionActivities } from './prediction-activities';
import { restoreActivities } from './restore-activities';
import { viActivities } from './vi-activities';

export type { CloudActivityOptions, ContainerStep } from './cloud-context';
export type { DigestMismatchDetails } from './copy-activities';

export function createCloudActivities(cloud: Cloud, options: CloudActivityOptions = {}) {
  const here = new CloudContext(cloud, options);
  const activities = {
    ...inventoryActivities, // inventory, pre-flight, claims
    ...viActivities, // deploy and remove a VI; DNS records
    ...networkActivities, // networks, stretch, public addresses and drains
    ...copyActivities, // the destination made ready; rootfs, volumes, image pushed and checked
    ...predictionActivities, // measurements for the blackout prediction
    ...checkpointActivities, // the freeze at the source; post-copy page serving
    ...restoreActivities, // the restore at the destination, its lease and its fence
    ...postCopyActivities, // the post-copy window
    ...sourceActivities, // the source's copy resumed (rollback) or released (commit)
  };
  return withAttempts(cloud.name, cloud.workDir, bindTo(here, activities));
}

type CloudActivityImpl = (here: CloudContext, input: never, attempt: Attempt) => Promise<unknown>;
type ActivityImpl = (input: never, attempt: Attempt) => Promise<unknown>;

/** Each activity with this cloud's context bound: (input, attempt). */
function bindTo<T extends Record<string, CloudActivityImpl>>(here: CloudContext, impls: T): { [K in keyof T]: (input: Parameters<T[K]>[1], attempt: Attempt) => ReturnType<T[K]> } {
  return Object.fromEntries(
    Object.entries(impls).map(([name, impl]) => [name, (input: never, attempt: Attempt) => impl(here, input, attempt)]),
  ) as never;
}

/** Runs every activity through runAttempt, keyed by its container step when it has one. */
function withAttempts<T extends Record<string, ActivityImpl>>(cloudName: string, stateDir: string, impls: T): { [K in keyof T]: (input: Parameters<T[K]>[0]) => ReturnType<T[K]> } {
  return Object.fromEntries(
    Object.entries(impls).map(([name, impl]) => [
      name,
      (input: Partial<ContainerStep>) => {
        const step = input.migrationId && input.container ? `${input.migrationId}/${input.container.name}` : undefined;
        return runAttempt({ cloud: cloudName, activity: name, step, migration: input.migrationId, container: input.container?.name, stateDir }, (attempt) =>
          (impl as (input: unknown, attempt: Attempt) => Promise<unknown>)(input, attempt),
        );
      },
    ]),
  ) as never;
}

export type CloudActivities = ReturnType<typeof createCloudActivities>;
