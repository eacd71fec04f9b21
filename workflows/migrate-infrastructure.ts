/**
 * The migration workflow: deterministic orchestration only. It reads as its stages (each a
 * module of workflows/stages/), routes each activity to the worker that lives in the right cloud
 * (one task queue per cloud), records a compensation before every step that changes something,
 * and exposes progress.
 *
 *   inventory → preflight → network → for each group (stages/move-group.ts): prepare → pre-copy →
 *   predict → approval → checkpoint → drain-setup → transfer → restore → [post-copy] → redirect →
 *   commit → release;  then drain → release-networks.
 *
 * Exactly once (docs/failure-model.md):
 * - Before a group's commit, any failure, an abort or a cancel rolls back (workflows/saga.ts: the
 *   fences, then what the source needs, then the resumes, then clean-up; a dead cloud's clean-up
 *   is left to a follow-up workflow), in a scope that cannot be cancelled. After its commit,
 *   nothing of it is undone.
 * - Fencing: the source is resumed only once the destination copy is proven gone — discarded by
 *   the destination, its lease ended, or never started (Temporal records that no restore attempt
 *   began). When it cannot be proven, the container stays frozen at the source with its complete
 *   image, the workflow says so (state "frozen-at-source") and waits for the proof or an
 *   operator's word.
 * - Every step has a time budget; the frozen steps share the plan's blackout budget.
 *
 * Changing this workflow: migrations in flight replay it (README, "Changing the workflow without
 * breaking migrations in flight"; test/unit/replay.test.ts).
 */
import { ApplicationFailure, CancellationScope, isCancellation, log, workflowInfo } from '@temporalio/workflow';
import { parsePlan, PlanError, type MigrationPlan } from '../lib/plan';
import type { MigrationReport } from '../lib/types';
import { faults } from './fault-sinks';
import { announce, createContext, publish } from './stages/context';
import { describe } from './stages/failures';
import { takeInventory } from './stages/inventory';
import { moveGroup } from './stages/move-group';
import { drainConnections } from './stages/drain';
import { joinNetworks, releaseNetworks } from './stages/network';
import { preflight } from './stages/preflight';
import { migrationReport } from './stages/report';
import { countEnded, countStarted } from './stages/metrics';
import { listenToOperators } from './stages/operators';
import { rollBack } from './stages/rollback';

export { abortSignal, abortUpdate, approveCutoverSignal, approveUpdate, confirmDestinationGoneSignal, progressQuery, type OperatorAnswer } from './stages/operators';

export async function migrateInfrastructure(input: unknown): Promise<MigrationReport> {
  const ctx = createContext(validPlan(input), workflowInfo().workflowId);
  // Abort and cancel are the same clean rollback: both cancel the running stage (stages/operators.ts).
  const work = new CancellationScope();
  listenToOperators(ctx, work);
  announce(ctx);
  countStarted(ctx);
  try {
    await work.run(async () => {
      const { inventory, groups } = await takeInventory(ctx);
      const destination = await preflight(ctx, inventory);
      await joinNetworks(ctx, inventory, destination);
      for (const names of groups) await moveGroup(ctx, inventory, names);
      await drainConnections(ctx);
      await releaseNetworks(ctx, inventory, destination);
    });
  } catch (err) {
    const reason = ctx.operator.abortReason ?? (isCancellation(err) ? 'the migration was cancelled' : describe(err));
    await CancellationScope.nonCancellable(() => rollBack(ctx, reason));
  }
  ctx.progress.state = 'completed';
  ctx.progress.phase = 'done';
  publish(ctx);
  countEnded(ctx, 'completed');
  faults.point('phase:done', ctx.migrationId);
  if (ctx.report.warnings.length) log.warn('migration completed with warnings', { warnings: ctx.report.warnings });
  return migrationReport(ctx);
}

/** The plan, validated by the same schema as the CLI and the client API (a bad one fails the workflow at once). */
function validPlan(input: unknown): MigrationPlan {
  try {
    return parsePlan(input);
  } catch (err) {
    if (err instanceof PlanError) throw ApplicationFailure.nonRetryable(err.message, 'InvalidPlan');
    throw err;
  }
}
