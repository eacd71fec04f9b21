/**
 * Stage "predict" of a group: its blackout predicted from what was measured just now (memory, the
 * link through the image stream, this host's earlier dumps and restores); over the plan's budget,
 * no freeze. Then the approval gate, for plans that ask for an operator's word.
 */
import { ApplicationFailure, condition } from '@temporalio/workflow';
import type { ContainerStep } from '../../activities/cloud-activities';
import { transferMode } from '../../lib/plan';
import { chooseMode, predictBlackout, type BlackoutPrediction } from '../../lib/prediction';
import { note, phase, publish, type Member, type MigrationContext } from './context';

/** Filler sent through the image stream just before a freeze to measure the link (~70 ms at 1 Gbit/s). */
const LINK_PROBE_BYTES = 8 << 20;

/** How a group's memory moves, and why (the plan's mode, or what "auto" weighed). */
export interface GroupMode {
  postCopy: boolean;
  reason: string;
}

export async function predictGroup(ctx: MigrationContext, label: string, members: Member[]): Promise<{ predicted: BlackoutPrediction; linkProbeBytes: number; mode: GroupMode }> {
  const { options } = ctx;
  const planMode = transferMode(options);
  const steps: ContainerStep[] = members.map((m) => m.step);
  const endpoint = members[0]!.endpoint;
  let linkProbeBytes = 0;
  let mode: GroupMode = { postCopy: planMode === 'post-copy', reason: `the plan's mode (${planMode})` };
  const predicted = await phase(ctx, 'predict', label, async () => {
    const [measured, destinationHost] = await Promise.all([
      ctx.src.probe.measureForPrediction({ migrationId: ctx.migrationId, containers: steps.map((s) => s.container), endpoint, probeBytes: LINK_PROBE_BYTES, postCopy: planMode === 'post-copy', ...(planMode === 'auto' ? { auto: true } : {}) }),
      ctx.dst.probe.restoreRates({}),
    ]);
    ctx.progress.bytesMoved += measured.link.bytes;
    linkProbeBytes = measured.link.bytes;
    const common = {
      memberBytes: measured.memberBytes,
      linkBytesPerMs: measured.link.bytes / measured.link.ms,
      restores: destinationHost.restores,
      cores: { source: measured.cores, destination: destinationHost.cores },
      streamed: !!endpoint.streamPort,
    };
    if (planMode !== 'auto') {
      return predictBlackout({
        ...common,
        dumps: measured.dumps,
        dumpsInMemory: measured.dumpsInMemory,
        calibrated: { dumpBytesPerMs: measured.calibratedDumpBytesPerMs, restoreBytesPerMs: destinationHost.calibratedRestoreBytesPerMs },
        postCopy: planMode === 'post-copy',
      });
    }
    const streamed = predictBlackout({
      ...common,
      dumps: measured.streamedDumps.dumps,
      calibrated: { dumpBytesPerMs: measured.streamedDumps.calibratedBytesPerMs, restoreBytesPerMs: destinationHost.calibratedRestoreBytesPerMs },
    });
    const postCopy = predictBlackout({
      ...common,
      dumps: measured.postCopyDumps.dumps,
      dumpsInMemory: measured.postCopyDumps.inMemory,
      calibrated: { dumpBytesPerMs: measured.postCopyDumps.calibratedBytesPerMs, restoreBytesPerMs: destinationHost.calibratedRestoreBytesPerMs },
      postCopy: true,
    });
    mode = chooseMode({ streamedMs: streamed.ms, postCopyMs: postCopy.ms, imageStream: !!endpoint.streamPort, forks: steps.map((s, i) => ({ name: s.container.name, fork: measured.forks?.[i] ?? null })) });
    return mode.postCopy ? postCopy : streamed;
  });
  const parts = `dump ${predicted.dumpMs} ms, transfer ${predicted.transferMs} ms`;
  note(ctx, `${label}: blackout predicted ${(predicted.ms / 1000).toFixed(2)} s (image ~${Math.round(predicted.imageBytes / 1048576)} MiB: ${parts} at ${predicted.linkMbit} Mbit/s, restore ${predicted.restoreMs} ms; ${predicted.basis})`);
  if (planMode === 'auto') note(ctx, `${label}: ${mode.postCopy ? 'post-copy' : 'streamed'}: ${mode.reason}`);
  if (predicted.ms > ctx.budgetMs) {
    throw ApplicationFailure.nonRetryable(
      `the blackout of ${label} is predicted at ${(predicted.ms / 1000).toFixed(1)} s, over the plan's blackoutBudgetSeconds (${options.blackoutBudgetSeconds} s): ` +
        `stopping before the freeze (image ~${Math.round(predicted.imageBytes / 1048576)} MiB, link ${predicted.linkMbit} Mbit/s, ${parts}, restore ${predicted.restoreMs} ms)`,
      'BlackoutBudgetExceeded',
    );
  }
  return { predicted, linkProbeBytes, mode };
}

/** Plans with options.approveCutover wait here, before the freeze, for the operator's approveCutover. */
export async function awaitApproval(ctx: MigrationContext): Promise<void> {
  if (ctx.operator.approved) return;
  ctx.progress.state = 'awaiting-approval';
  ctx.progress.phase = 'awaiting approval';
  publish(ctx);
  await condition(() => ctx.operator.approved);
  ctx.progress.state = 'running';
  publish(ctx);
}
