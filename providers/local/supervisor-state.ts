/** What the workers' supervisor (supervisor.ts) records of what it runs, for `migravi clouds status`. */
import { readFileSync } from 'node:fs';
import path from 'node:path';

export interface SupervisedProcess {
  name: string;
  pid?: number;
  /** How many times it was started again after it died. */
  restarts: number;
  startedAt?: number;
  log: string;
  pidFile: string;
  /** Why the last start failed, or how the last run ended. */
  last?: string;
}

export interface SupervisorState {
  pid: number;
  temporalPort: number;
  processes: SupervisedProcess[];
}

export function supervisorStateFile(stateDir: string): string {
  return path.join(stateDir, 'supervisor.json');
}

export function readSupervisorState(stateDir: string): SupervisorState | undefined {
  try {
    return JSON.parse(readFileSync(supervisorStateFile(stateDir), 'utf8')) as SupervisorState;
  } catch {
    return undefined;
  }
}

/** Each cloud worker's Prometheus endpoint, inside its cloud's namespace (one per namespace: the same port everywhere). */
export const CLOUD_METRICS_PORT = 9464;
