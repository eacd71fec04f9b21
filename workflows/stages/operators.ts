/**
 * What operators can ask of a running migration. Approve and abort are Workflow Updates: the
 * caller learns whether the migration took the request (a validator refuses it, with the reason,
 * before anything is recorded: nothing to approve, already rolling back, past its commit point).
 * The older signals stay for callers that only signal; confirmDestinationGone is a signal only.
 */
import { defineQuery, defineSignal, defineUpdate, setHandler, type CancellationScope } from '@temporalio/workflow';
import type { MigrationProgress } from '../../lib/types';
import type { MigrationContext } from './context';

/** What an accepted request answers: the migration's state as it took it. */
export interface OperatorAnswer {
  accepted: true;
  state: MigrationProgress['state'];
  phase: string;
}

export const progressQuery = defineQuery<MigrationProgress>('progress');
/** Operator: go ahead with the freeze (plans with options.approveCutover). Refused when there is nothing to approve. */
export const approveUpdate = defineUpdate<OperatorAnswer>('approve');
/** Operator: stop before the commit point and roll back. Refused once it cannot be honoured. */
export const abortUpdate = defineUpdate<OperatorAnswer, [reason?: string]>('abort');
/** The same as the approve update, as a signal (no answer). */
export const approveCutoverSignal = defineSignal('approveCutover');
/** The same as the abort update, as a signal (no answer; ignored when it cannot be honoured). */
export const abortSignal = defineSignal<[reason?: string]>('abort');
/**
 * Operator: the destination copy of the container being rolled back is gone (checked by hand),
 * so the source may resume. Only read while the workflow is "frozen-at-source".
 */
export const confirmDestinationGoneSignal = defineSignal('confirmDestinationGone');

const FINISHED: ReadonlyArray<MigrationProgress['state']> = ['completed', 'failed'];
const ROLLING_BACK: ReadonlyArray<MigrationProgress['state']> = ['compensating', 'frozen-at-source'];

/** Why approving now makes no sense, or undefined when it does. */
function approvalRefused(ctx: MigrationContext): string | undefined {
  const { state } = ctx.progress;
  if (!ctx.options.approveCutover) return 'this migration does not wait for approval (its plan has options.approveCutover off)';
  if (FINISHED.includes(state) || ROLLING_BACK.includes(state)) return `the migration is ${state}: there is nothing left to approve`;
  if (ctx.operator.approved) return 'the cut-over is approved already';
  return undefined;
}

/** Why aborting now cannot be honoured, or undefined when it can. */
function abortRefused(ctx: MigrationContext): string | undefined {
  const { state, containers } = ctx.progress;
  if (FINISHED.includes(state)) return `the migration has ${state === 'completed' ? 'completed' : 'failed'} already`;
  if (ROLLING_BACK.includes(state) || ctx.operator.abortReason) return `the migration is rolling back already${ctx.operator.abortReason ? ` (${ctx.operator.abortReason})` : ''}`;
  if (containers?.length && containers.every((c) => c.state === 'moved')) return 'the migration is past its commit point: every container runs at the destination';
  return undefined;
}

const answer = (ctx: MigrationContext): OperatorAnswer => ({ accepted: true, state: ctx.progress.state, phase: ctx.progress.phase });

/** The progress query and the operators' requests. Abort and cancel are the same clean rollback: both cancel `work`. */
export function listenToOperators(ctx: MigrationContext, work: CancellationScope): void {
  const approve = () => {
    ctx.operator.approved = true;
  };
  const abort = (reason?: string) => {
    ctx.operator.abortReason ??= reason || 'aborted by the operator';
    work.cancel();
  };
  setHandler(progressQuery, () => ctx.progress);
  setHandler(approveCutoverSignal, approve);
  setHandler(abortSignal, abort);
  setHandler(confirmDestinationGoneSignal, () => {
    ctx.operator.destinationConfirmedGone = true;
  });
  const refuse = (why: string | undefined) => {
    if (why) throw new Error(why);
  };
  setHandler(
    approveUpdate,
    () => {
      approve();
      return answer(ctx);
    },
    { validator: () => refuse(approvalRefused(ctx)) },
  );
  setHandler(
    abortUpdate,
    (reason?: string) => {
      abort(reason);
      return answer(ctx);
    },
    { validator: (_reason?: string) => refuse(abortRefused(ctx)) },
  );
}
