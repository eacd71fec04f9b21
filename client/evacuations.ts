/**
 * Evacuations for services and the CLI: one now (`startEvacuation`), or on a Temporal Schedule
 * (cron or interval, an overlap policy, pause, trigger now). The plan is validated here first
 * (lib/evacuation.ts), and again by the workflow each time a schedule starts it.
 */
import { ScheduleOverlapPolicy, type Client, type ScheduleDescription, type WorkflowHandle } from '@temporalio/client';
import { parseEvacuationPlan, type EvacuationPlan, type EvacuationPlanInput, type EvacuationReport } from '../lib/evacuation';
import { MIGRATION_WORKFLOW_TASK_TIMEOUT, ORCHESTRATOR_TASK_QUEUE } from '../lib/plan';

export type EvacuationHandle = WorkflowHandle<(input: unknown) => Promise<EvacuationReport>>;

export function evacuationWorkflowId(plan: EvacuationPlan, now = new Date()): string {
  return `evacuate-${plan.source}-${now.toISOString().replace(/[-:]/g, '').replace(/\..*/, '')}`;
}

export async function startEvacuation(client: Client, input: EvacuationPlanInput, opts: { workflowId?: string } = {}): Promise<EvacuationHandle> {
  const plan = parseEvacuationPlan(input);
  return client.workflow.start('evacuateCloud', { taskQueue: ORCHESTRATOR_TASK_QUEUE, workflowId: opts.workflowId ?? evacuationWorkflowId(plan), workflowTaskTimeout: MIGRATION_WORKFLOW_TASK_TIMEOUT, args: [plan] });
}

/** What to do when a schedule's time comes while its previous evacuation still runs. */
export const OVERLAP_POLICIES = ['skip', 'buffer-one', 'buffer-all', 'cancel-other', 'allow-all'] as const;
export type OverlapPolicy = (typeof OVERLAP_POLICIES)[number];

export interface EvacuationScheduleInput {
  scheduleId: string;
  evacuation: EvacuationPlanInput;
  /** A cron expression ("0 3 * * *"), or… */
  cron?: string;
  /** …an interval ("1h", "30m", "1 day"). */
  every?: string;
  /** Default skip: never two evacuations of one schedule at once. */
  overlap?: OverlapPolicy;
  paused?: boolean;
  note?: string;
}

export class ScheduleInputError extends Error {}

const SCHEDULE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const INTERVAL = /^\d+\s*(s|m|h|d|seconds?|minutes?|hours?|days?)$/;

/** Checks a schedule before anything is sent: one of cron/every, a known overlap policy, a valid plan. */
export function checkSchedule(input: EvacuationScheduleInput): EvacuationPlan {
  const problems: string[] = [];
  if (!SCHEDULE_ID.test(input.scheduleId)) problems.push(`schedule id "${input.scheduleId}": 1-63 characters, letters, digits, ".", "_" and "-"`);
  if (!!input.cron === !!input.every) problems.push('give exactly one of cron (e.g. "0 3 * * *") and every (e.g. "1h")');
  if (input.cron && input.cron.trim().split(/\s+/).length < 5 && !input.cron.startsWith('@')) problems.push(`cron "${input.cron}": five fields (minute hour day month weekday) or @daily/@hourly/…`);
  if (input.every && !INTERVAL.test(input.every.trim())) problems.push(`every "${input.every}": a number and a unit, e.g. 90s, 30m, 1h, 1d`);
  if (input.overlap && !OVERLAP_POLICIES.includes(input.overlap)) problems.push(`overlap "${input.overlap}": one of ${OVERLAP_POLICIES.join(', ')}`);
  let plan: EvacuationPlan | undefined;
  try {
    plan = parseEvacuationPlan(input.evacuation);
  } catch (err) {
    problems.push((err as Error).message);
  }
  if (problems.length || !plan) throw new ScheduleInputError(`invalid evacuation schedule:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
  return plan;
}

export async function createEvacuationSchedule(client: Client, input: EvacuationScheduleInput): Promise<void> {
  const plan = checkSchedule(input);
  await client.schedule.create({
    scheduleId: input.scheduleId,
    spec: input.cron ? { cronExpressions: [input.cron] } : { intervals: [{ every: input.every!.replace(/\s+/g, '') as '1h' }] },
    action: { type: 'startWorkflow', workflowType: 'evacuateCloud', taskQueue: ORCHESTRATOR_TASK_QUEUE, workflowId: `evacuate-${input.scheduleId}`, workflowTaskTimeout: MIGRATION_WORKFLOW_TASK_TIMEOUT, args: [plan] },
    policies: { overlap: ScheduleOverlapPolicy[(input.overlap ?? 'skip').toUpperCase().replace('-', '_') as keyof typeof ScheduleOverlapPolicy] },
    state: { paused: input.paused ?? false, ...(input.note ? { note: input.note } : {}) },
    memo: { spec: input.cron ? `cron ${input.cron}` : `every ${input.every}` },
  });
}

/** A schedule as an operator reads it. */
export interface EvacuationScheduleSummary {
  scheduleId: string;
  paused: boolean;
  note?: string;
  spec: string;
  overlap?: string;
  evacuation?: EvacuationPlan;
  /** The evacuations it started last (workflow ids), newest last. */
  recent: Array<{ workflowId: string; startedAt: string }>;
  next: string[];
}

/** How the schedule's times were given (kept in its memo: the server keeps a cron as calendars). */
function specText(d: ScheduleDescription): string {
  if (typeof d.memo?.spec === 'string') return d.memo.spec;
  const intervals = (d.spec.intervals ?? []).map((i) => `every ${typeof i.every === 'number' ? `${i.every / 1000}s` : String(i.every)}`);
  return [...intervals, ...(d.spec.calendars?.length ? [`${d.spec.calendars.length} calendar(s)`] : [])].join(', ') || '(no times)';
}

export async function describeEvacuationSchedule(client: Client, scheduleId: string): Promise<EvacuationScheduleSummary> {
  const d = await client.schedule.getHandle(scheduleId).describe();
  return {
    scheduleId,
    paused: d.state.paused,
    ...(d.state.note ? { note: d.state.note } : {}),
    spec: specText(d),
    overlap: String(d.policies.overlap).toLowerCase().replace('_', '-'),
    ...(d.action.type === 'startWorkflow' ? { evacuation: d.action.args?.[0] as EvacuationPlan } : {}),
    recent: d.info.recentActions.map((a) => ({ workflowId: a.action.workflow.workflowId, startedAt: a.takenAt.toISOString() })),
    next: d.info.nextActionTimes.map((t) => t.toISOString()),
  };
}

export async function listEvacuationSchedules(client: Client): Promise<EvacuationScheduleSummary[]> {
  const ids: string[] = [];
  for await (const s of client.schedule.list()) if (s.action?.type === 'startWorkflow' && s.action.workflowType === 'evacuateCloud') ids.push(s.scheduleId);
  return Promise.all(ids.sort().map((id) => describeEvacuationSchedule(client, id)));
}

export const pauseSchedule = (client: Client, id: string, note?: string) => client.schedule.getHandle(id).pause(note);
export const unpauseSchedule = (client: Client, id: string, note?: string) => client.schedule.getHandle(id).unpause(note);
/** Starts its evacuation now, under the schedule's own overlap policy (by default a running one is not doubled). */
export async function triggerSchedule(client: Client, id: string): Promise<void> {
  const handle = client.schedule.getHandle(id);
  await handle.trigger((await handle.describe()).policies.overlap);
}
export const deleteSchedule = (client: Client, id: string) => client.schedule.getHandle(id).delete();
