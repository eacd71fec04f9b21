/**
 * What `migravi` exits with, for scripts (README, "Command line"). A code says what happened to
 * the request, not which command ran.
 */
import { ScheduleNotFoundError, WorkflowFailedError, WorkflowNotFoundError } from '@temporalio/client';
import { EvacuationPlanError } from '../lib/evacuation';
import { KeyRingError } from '../lib/payload-keys';
import { TlsFilesError } from '../lib/temporal-tls';
import { PlanError } from '../lib/plan';
import { ViSpecError } from '../lib/vi-spec';
import { ScheduleInputError } from './evacuations';
import { RequestRefusedError } from './migravi-client';

export const EXIT = {
  /** Done as asked. */
  ok: 0,
  /** Anything not below (a bug, a cloud that failed an operation): the message says what. */
  failed: 1,
  /** Bad usage or invalid input (a plan, a VI file): refused before anything was touched. */
  usage: 2,
  /** The migration failed and was rolled back (an evacuation: one of its VIs' did); the message says where the VI runs now. */
  migrationFailed: 3,
  /** Temporal could not be reached at the given address. */
  unreachable: 4,
  /** No migration (workflow) or schedule with that id. */
  notFound: 5,
  /** The migration refused the request (approve with nothing to approve, abort past the commit point): the message says why. */
  refused: 6,
} as const;

export const EXIT_CODES_HELP = `Exit codes:
  0  done as asked
  1  failed (the message says what; e.g. a cloud refused a deploy)
  2  bad usage or invalid input: nothing was touched
  3  the migration (an evacuation: one of its VIs') failed and was rolled back
  4  Temporal could not be reached
  5  no migration (or schedule) with that id
  6  the migration refused the request (e.g. abort past its commit point; the message says why)`;

/** Temporal could not be reached (raised where the CLI connects). */
export class UnreachableError extends Error {}

/** The exit code and the message for an error that ended a command. */
export function exitFor(err: unknown): { code: number; message: string } {
  if (err instanceof PlanError || err instanceof ViSpecError || err instanceof EvacuationPlanError || err instanceof ScheduleInputError || err instanceof KeyRingError || err instanceof TlsFilesError) return { code: EXIT.usage, message: err.message };
  if (err instanceof ScheduleNotFoundError) return { code: EXIT.notFound, message: `no schedule ${err.scheduleId} in this namespace` };
  if (err instanceof RequestRefusedError) return { code: EXIT.refused, message: err.message };
  if (err instanceof UnreachableError) return { code: EXIT.unreachable, message: err.message };
  if (err instanceof WorkflowNotFoundError) return { code: EXIT.notFound, message: `no migration ${err.workflowId} in this namespace` };
  if (err instanceof WorkflowFailedError) {
    const cause = err.cause;
    const isMigration = cause && 'type' in cause && (cause as { type?: string }).type === 'MigrationFailed';
    return { code: isMigration ? EXIT.migrationFailed : EXIT.failed, message: cause?.message ?? err.message };
  }
  return { code: EXIT.failed, message: err instanceof Error ? err.message : String(err) };
}
