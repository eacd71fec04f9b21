/**
 * The rollback of a migration that failed (or was aborted or cancelled) before a group's commit:
 * the saga's undos (workflows/saga.ts: fences, the source's side, resumes, clean-up; a dead
 * cloud's clean-up handed to a follow-up workflow), then the claims; it always ends by throwing
 * what happened, with the undos and where everything runs now.
 */
import { ApplicationFailure, condition, log, sleep, startChild } from '@temporalio/workflow';
import type { ContainerStep } from '../../activities/cloud-activities';
import { cleanUpAfterRollback } from '../clean-up-after-rollback';
import type { Compensation, SagaRunner, UndoStep } from '../saga';
import { on } from './activity-stubs';
import { markContainers, note, publish, type MigrationContext } from './context';
import { countEnded } from './metrics';
import { endDrains } from './drain';
import { describe, neverStarted } from './failures';

/** How often a broken fence is retried while the source waits frozen. */
const FENCE_RETRY_SECONDS = 15;

export async function rollBack(ctx: MigrationContext, reason: string): Promise<never> {
  const { progress, saga, report } = ctx;
  progress.state = 'compensating';
  progress.error = reason;
  publish(ctx);
  log.error('migration failed, rolling back', { reason, compensations: saga.size });
  ctx.leases?.stop(); // from here the leases only run out
  const { undoFailures, handedOff } = await saga.rollBack(sagaRunner(ctx), { rollbackMs: ctx.rollbackMs, budgetLeftMs: () => (ctx.freezeDeadline === undefined ? undefined : ctx.freezeDeadline - Date.now()) });
  // Groups committed before the failure stay moved: their old addresses go now, undrained.
  await endDrains(ctx);
  // Containers not committed are free again (a committed one's claim went with its release).
  await ctx.src.undo.releaseClaims(ctx.claim).catch((undoErr: unknown) => undoFailures.push(`release the claims: ${describe(undoErr)}`));
  progress.state = 'failed';
  markContainers(ctx, 'moving', 'rolled back');
  publish(ctx);
  countEnded(ctx, 'rolled_back');
  const lines = [`migration ${ctx.plan.name} failed: ${reason}`];
  const where = whereItRuns(ctx);
  lines.push(undoFailures.length ? `rolled back, but some cleanup failed: ${where}\n- ${undoFailures.join('\n- ')}` : `rolled back: ${where}`);
  if (handedOff) {
    const clouds = [...new Set(handedOff.steps.map((s) => s.cloud))].join(', ');
    lines.push(`clean-up left for when the worker of ${clouds} is back (workflow ${handedOff.workflowId}): ${handedOff.steps.map((s) => s.what).join('; ')}`);
  }
  if (report.events.length) lines.push(`on the way: ${report.events.join('; ')}`);
  // The undos and the stage each ran in, for those who check the order (test/unit/workflow.test.ts).
  const undos = saga.recorded();
  throw ApplicationFailure.nonRetryable(lines.join('\n'), 'MigrationFailed', {
    bytesMoved: progress.bytesMoved,
    events: report.events,
    undos,
    ...(handedOff ? { cleanupWorkflowId: handedOff.workflowId, cleanupSteps: handedOff.steps.map((s) => s.what) } : {}),
  });
}

function whereItRuns(ctx: MigrationContext): string {
  const moved = ctx.report.containers.map((c) => c.name);
  return moved.length ? `${moved.join(', ')} stay${moved.length === 1 ? 's' : ''} at ${ctx.plan.destination} (committed); the rest runs at the source` : 'the VI runs at the source';
}

/** How the saga's undos reach the clouds, and where the rollback reports to. */
function sagaRunner(ctx: MigrationContext): SagaRunner {
  return {
    run: (step, bound) => {
      const stub = on(step.cloud, { scheduleToCloseMs: bound.ms, ...(bound.deadWorkerMs ? { scheduleToStartTimeout: bound.deadWorkerMs } : {}) });
      return (stub as unknown as Record<string, (input: unknown) => Promise<unknown>>)[step.activity]!(step.input);
    },
    awaitFenceProof: (fence, why) => awaitFenceProof(ctx, fence, why),
    handOff: async (steps: UndoStep[]) => {
      const child = await startChild(cleanUpAfterRollback, { workflowId: `${ctx.workflowId}-cleanup`, args: [{ migration: ctx.workflowId, steps }], parentClosePolicy: 'ABANDON' });
      return child.workflowId;
    },
    workerDown: neverStarted,
    now: () => Date.now(),
    sleepUntil: (at) => sleep(Math.max(1, at - Date.now())),
    describe,
    stage: (what) => {
      ctx.progress.phase = what;
      publish(ctx);
    },
    note: (event) => note(ctx, event),
  };
}

/**
 * A broken fence: the destination copy may be alive, so the source stays frozen with its image.
 * The workflow says so (state "frozen-at-source") and waits for proof: a retried discard that
 * succeeds, or an operator's confirmDestinationGone signal after checking the destination.
 */
async function awaitFenceProof(ctx: MigrationContext, fence: Compensation, why: string): Promise<void> {
  const { plan, progress } = ctx;
  const frozenSince = Date.now();
  const what = (fence.input as ContainerStep).container.name;
  for (;;) {
    progress.state = 'frozen-at-source';
    progress.error = `${what} stays frozen at ${plan.source} with its complete checkpoint image: its copy at ${plan.destination} could not be proven gone (${fence.what}: ${why}). Retrying every ${FENCE_RETRY_SECONDS} s; an operator who made sure nothing of it runs at ${plan.destination} may signal confirmDestinationGone.`;
    progress.phase = `frozen at source: waiting for proof that ${what} is gone from ${plan.destination}`;
    publish(ctx);
    if (await condition(() => ctx.operator.destinationConfirmedGone, `${FENCE_RETRY_SECONDS} seconds`)) {
      note(ctx, `${what} stayed frozen at ${plan.source} for ${Math.round((Date.now() - frozenSince) / 1000)} s until the operator confirmed its copy at ${plan.destination} was gone (${why})`);
      break;
    }
    try {
      await on(plan.destination, { scheduleToCloseMs: FENCE_RETRY_SECONDS * 2000 }).discardContainer(fence.input as ContainerStep);
      note(ctx, `${what} stayed frozen at ${plan.source} for ${Math.round((Date.now() - frozenSince) / 1000)} s until ${plan.destination} proved its copy gone (first: ${why})`);
      break;
    } catch (err) {
      why = describe(err);
    }
  }
  progress.state = 'compensating';
  publish(ctx);
}
