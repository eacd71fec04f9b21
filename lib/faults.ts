/**
 * The fault-injection switch: off unless a test turns it on. A worker started with
 * MIGRAVI_FAULT_FILE=PATH reads that JSON file at every fault point (activity start and end,
 * points inside checkpoint, transfer and restore, and the workflow's phase boundaries through a
 * sink of the orchestrator) and does what a matching fault says. Plans from users never carry
 * faults: only the worker's environment does.
 *
 *   { "faults": [ { "id": "k1", "process": "cloud-a", "at": "checkpoint:end", "action": "kill" } ] }
 *
 * Actions: "kill" (SIGKILL this worker), "fail-once" / "fail" (throw once / every time), "hang"
 * (block without progress until the attempt is abandoned), "delay" (wait `ms`, then go on), "corrupt" (the caller flips a byte
 * of what it sends, after hashing it), "stop-children-and-kill" (SIGSTOP the attempt's child
 * processes, e.g. a dumping CRIU, then SIGKILL this worker: a hung dump orphaned by a dead worker). Every action but "fail" fires once: a marker file next to
 * the fault file records it, so a restarted worker does not fire it again.
 */
import { closeSync, existsSync, mkdirSync, openSync, readFileSync } from 'node:fs';

export type FaultAction = 'kill' | 'fail-once' | 'fail' | 'hang' | 'delay' | 'corrupt' | 'stop-children-and-kill';

export interface Fault {
  id: string;
  /** "orchestrator" or a cloud name: which worker fires it. */
  process: string;
  /** "<activity>:start", "<activity>:end", "checkpoint:after-dump", "transfer:mid", "restore:before-criu", "phase:<name>"… */
  at: string;
  action: FaultAction;
  /** Only for this migration (workflow id, sanitized as the workflow does); any migration when absent. */
  migration?: string;
  /** Only in the steps of this container; any when absent. */
  container?: string;
  /** "delay": how long. */
  ms?: number;
}

export class InjectedFault extends Error {
  constructor(readonly fault: Fault) {
    super(`injected fault ${fault.id}: ${fault.action} at ${fault.at} in ${fault.process}`);
    this.name = 'InjectedFault';
  }
}

const faultFile = process.env.MIGRAVI_FAULT_FILE;

function loadFaults(): Fault[] {
  if (!faultFile || !existsSync(faultFile)) return [];
  try {
    return (JSON.parse(readFileSync(faultFile, 'utf8')) as { faults?: Fault[] }).faults ?? [];
  } catch {
    return []; // being rewritten by the test: no fault this time
  }
}

/** True the first time only, across restarts of this worker (O_EXCL marker file). */
function claimFiring(fault: Fault): boolean {
  if (fault.action === 'fail') return true;
  const dir = `${faultFile}.fired`;
  mkdirSync(dir, { recursive: true });
  try {
    closeSync(openSync(`${dir}/${fault.id}`, 'wx'));
    return true;
  } catch {
    return false;
  }
}

/**
 * Checks the fault point `at` for this process. Kills, throws, or returns the data action the
 * caller must carry out ("hang", "corrupt"); undefined when no fault fires (the normal case).
 */
export function faultPoint(processName: string, at: string, migration?: string, container?: string): 'hang' | 'corrupt' | 'stop-children-and-kill' | { delayMs: number } | undefined {
  if (!faultFile) return undefined;
  for (const fault of loadFaults()) {
    if (fault.process !== processName || fault.at !== at) continue;
    if (fault.migration && migration && fault.migration !== migration) continue;
    if (fault.container && fault.container !== container) continue;
    if (!claimFiring(fault)) continue;
    console.error(`[faults] firing ${fault.id}: ${fault.action} at ${at} in ${processName}${migration ? ` (${migration})` : ''}`);
    switch (fault.action) {
      case 'kill':
        process.kill(process.pid, 'SIGKILL');
        return undefined;
      case 'fail':
      case 'fail-once':
        throw new InjectedFault(fault);
      case 'delay':
        return { delayMs: fault.ms ?? 0 };
      case 'hang':
      case 'corrupt':
      case 'stop-children-and-kill':
        return fault.action;
    }
  }
  return undefined;
}

export function faultsEnabled(): boolean {
  return faultFile !== undefined;
}
