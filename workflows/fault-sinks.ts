/**
 * The workflow's side of the fault-injection switch (lib/faults.ts): at each phase boundary it
 * calls this sink, which the orchestrator worker runs outside the sandbox, after the workflow
 * task, and never during replay. A no-op unless the worker was started with MIGRAVI_FAULT_FILE.
 */
import { proxySinks, type Sinks } from '@temporalio/workflow';

export interface FaultSinks extends Sinks {
  faults: {
    /** "phase:<name>" is reached by migration `migration`. */
    point(at: string, migration: string): void;
  };
}

export const { faults } = proxySinks<FaultSinks>();
