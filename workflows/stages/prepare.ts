/**
 * Stages "prepare" and "pre-copy" of a group: at the destination, each member's port (same IP and
 * MAC, unplugged) and an incoming directory; then what can be copied while the members still run
 * — a read-only rootfs, and every volume's first round.
 */
import { ApplicationFailure } from '@temporalio/workflow';
import type { ContainerStep } from '../../activities/cloud-activities';
import type { TransferEndpoint } from '../../lib/types';
import { transferMode } from '../../lib/plan';
import { phase, type Member, type MigrationContext } from './context';
import { copyRootfs, copyVolumes } from './copies';
import { settleAll } from './settle-all';

export async function prepareGroup(ctx: MigrationContext, label: string, steps: ContainerStep[]): Promise<Member[]> {
  const { plan, options } = ctx;
  const endpoints = await phase(ctx, 'prepare', label, () =>
    settleAll(steps, (step) => {
      ctx.saga.record({ what: `remove ${step.container.name}'s port, bundle and files at ${plan.destination}`, role: 'cleanup', cloud: plan.destination, activity: 'discardPrepared', input: step });
      // The source pushes as its own account into an inbox of its own at the destination.
      return ctx.dst.control.prepareDestination({ ...step, peer: plan.source });
    }),
  );
  if (transferMode(options) === 'post-copy' && endpoints.some((e) => !e.streamPort)) {
    throw ApplicationFailure.nonRetryable(`postCopy needs the destination's image stream, which ${plan.destination} does not offer: stopping before the freeze`, 'InvalidPlan');
  }
  const members = await preCopy(ctx, label, steps, endpoints);
  for (const m of members) m.resends += m.preCopied?.resends ?? 0;
  return members;
}

/**
 * A read-only rootfs is copied while the container runs; a writable one can still change, so it
 * is copied after the freeze, inside the blackout. Volumes are copied while their container runs
 * too; the freeze sends only what changed.
 */
async function preCopy(ctx: MigrationContext, label: string, steps: ContainerStep[], endpoints: TransferEndpoint[]): Promise<Member[]> {
  const { options } = ctx;
  const stubs = { src: ctx.src.precopy, dst: ctx.dst.precopy };
  const paired = steps.map((step, i) => ({ step, endpoint: endpoints[i]! }));
  const readonly = paired.filter(({ step }) => step.container.readonlyRootfs);
  const withVolumes = paired.filter(({ step }) => step.container.volumes?.length);
  const [copies, volumeCopies] =
    readonly.length || withVolumes.length
      ? await phase(ctx, 'pre-copy', label, () =>
          Promise.all([
            settleAll(readonly, ({ step, endpoint }) => copyRootfs(ctx, step, endpoint, stubs), options.parallelTransfers),
            settleAll(withVolumes, ({ step, endpoint }) => copyVolumes(ctx, step, endpoint, 'pre', stubs), options.parallelTransfers),
          ]),
        )
      : [[], []];
  return paired.map(({ step, endpoint }) => ({
    step,
    endpoint,
    preCopied: copies[readonly.findIndex((r) => r.step === step)],
    preVolumes: volumeCopies[withVolumes.findIndex((r) => r.step === step)],
    restoreMayHaveStarted: false,
    resends: 0,
  }));
}
