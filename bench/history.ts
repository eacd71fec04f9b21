/**
 * Orchestration overhead read from Temporal's own history of a migration: the workflow's wall
 * time minus the time during which at least one activity was running on a worker.
 */
import type { WorkflowHandle } from '@temporalio/client';

interface Timestamp {
  seconds?: { toNumber(): number } | number | null;
  nanos?: number | null;
}

function ms(t: Timestamp | null | undefined): number {
  if (!t) return NaN;
  const seconds = typeof t.seconds === 'number' ? t.seconds : (t.seconds?.toNumber() ?? 0);
  return seconds * 1000 + (t.nanos ?? 0) / 1e6;
}

/** Total length of the union of intervals. */
export function unionMs(intervals: Array<[number, number]>): number {
  const sorted = [...intervals].sort((a, b) => a[0] - b[0]);
  let total = 0;
  let [start, end] = [-Infinity, -Infinity];
  for (const [s, e] of sorted) {
    if (s > end) {
      if (end > start) total += end - start;
      [start, end] = [s, e];
    } else end = Math.max(end, e);
  }
  if (end > start) total += end - start;
  return total;
}

export interface HistoryTimes {
  wallMs: number;
  inActivitiesMs: number;
  overheadMs: number;
  activities: number;
}

export async function historyTimes(handle: WorkflowHandle): Promise<HistoryTimes> {
  const history = await handle.fetchHistory();
  const events = history.events ?? [];
  const startedAt = new Map<number, number>();
  const intervals: Array<[number, number]> = [];
  let wallStart = NaN;
  let wallEnd = NaN;
  for (const e of events) {
    const at = ms(e.eventTime as Timestamp);
    const id = Number(e.eventId);
    if (e.workflowExecutionStartedEventAttributes) wallStart = at;
    if (e.workflowExecutionCompletedEventAttributes || e.workflowExecutionFailedEventAttributes) wallEnd = at;
    if (e.activityTaskStartedEventAttributes) startedAt.set(id, at);
    const closed =
      e.activityTaskCompletedEventAttributes ?? e.activityTaskFailedEventAttributes ?? e.activityTaskTimedOutEventAttributes ?? e.activityTaskCanceledEventAttributes;
    if (closed?.startedEventId) {
      const began = startedAt.get(Number(closed.startedEventId));
      if (began !== undefined) intervals.push([began, at]);
    }
  }
  const wallMs = wallEnd - wallStart;
  const inActivitiesMs = unionMs(intervals);
  return { wallMs, inActivitiesMs, overheadMs: wallMs - inActivitiesMs, activities: intervals.length };
}
