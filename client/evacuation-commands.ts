/**
 * `migravi evacuate` (one evacuation now) and `migravi schedule …` (evacuations on a Temporal
 * Schedule). Plans are checked here before anything reaches Temporal.
 */
import { Option, type Command } from 'commander';
import { parseEvacuationPlan, type EvacuationReport } from '../lib/evacuation';
import { Output, positive, withClient, type Globals } from './cli-common';
import {
  checkSchedule,
  createEvacuationSchedule,
  deleteSchedule,
  describeEvacuationSchedule,
  listEvacuationSchedules,
  OVERLAP_POLICIES,
  pauseSchedule,
  startEvacuation,
  triggerSchedule,
  unpauseSchedule,
  type EvacuationScheduleSummary,
  type OverlapPolicy,
} from './evacuations';
import { EXIT } from './exit-codes';

interface SelectOptions {
  to: string;
  vi?: string[];
  concurrency: string;
}

const selectOptions = (cmd: Command) =>
  cmd
    .requiredOption('--to <cloud>', 'where the VIs go')
    .option('--vi <name...>', 'only these VIs (default: every VI the cloud hosts)')
    .option('--concurrency <n>', 'VIs moved at once', '2');

const evacuationOf = (source: string, o: SelectOptions) => ({ source, destination: o.to, concurrency: positive(o.concurrency, '--concurrency'), ...(o.vi ? { vis: o.vi } : {}) });

export function reportLines(r: EvacuationReport): string[] {
  return [
    `evacuation of ${r.source} to ${r.destination}: ${r.moved.length} moved, ${r.rolledBack.length} rolled back, ${r.skipped.length} skipped, in ${(r.wallMs / 1000).toFixed(1)} s`,
    ...r.moved.map((m) => `  moved        ${m.vi} (${m.workflowId}: ${(m.wallMs / 1000).toFixed(1)} s, frozen ${m.frozenMs} ms)`),
    ...r.rolledBack.map((m) => `  rolled back  ${m.vi} (${m.workflowId}): ${m.reason.split('\n')[0]}`),
    ...r.skipped.map((m) => `  skipped      ${m.vi}: ${m.reason}`),
  ];
}

function scheduleLines(s: EvacuationScheduleSummary): string[] {
  const e = s.evacuation;
  return [
    `${s.scheduleId}: ${s.paused ? 'PAUSED' : 'active'}, ${s.spec}, overlap ${s.overlap}${s.note ? ` — ${s.note}` : ''}`,
    ...(e ? [`  evacuates ${e.source} to ${e.destination}${e.vis ? ` (only ${e.vis.join(', ')})` : ''}, ${e.concurrency} at a time`] : []),
    ...(s.next.length ? [`  next: ${s.next.slice(0, 3).join(', ')}`] : []),
    ...s.recent.map((r) => `  started ${r.workflowId} at ${r.startedAt}`),
  ];
}

export function evacuationCommands(cli: Command, globals: Globals): void {
  selectOptions(cli.command('evacuate').description('move every VI of a cloud (or those --vi names) to another cloud now; exit 3 if any rolled back').argument('<cloud>', 'the cloud to empty'))
    .option('--no-wait', 'print the evacuation id and return once it has started')
    .action(async (cloud: string, o: SelectOptions & { wait: boolean }, cmd: Command) => {
      const g = globals(cmd);
      const out = new Output(g.json);
      const evacuation = parseEvacuationPlan(evacuationOf(cloud, o)); // checked before anything connects
      await withClient(g, async (client) => {
        const handle = await startEvacuation(client, evacuation);
        out.line(`started ${handle.workflowId}: each VI's migration is ${handle.workflowId}-<vi>`);
        if (!o.wait) return out.result({ workflowId: handle.workflowId }, () => []);
        const report = await handle.result();
        out.result({ workflowId: handle.workflowId, report }, () => reportLines(report));
        if (report.rolledBack.length) process.exitCode = EXIT.migrationFailed;
      });
    });

  const schedule = cli.command('schedule').description('evacuations on a Temporal Schedule (cron or interval)');
  selectOptions(schedule.command('create').description('a schedule that evacuates a cloud').argument('<id>', 'schedule id').requiredOption('--source <cloud>', 'the cloud to empty'))
    .option('--cron <expr>', 'when, as cron ("0 3 * * *": every day at 03:00 UTC)')
    .option('--every <interval>', 'or how often (90s, 30m, 1h, 1d)')
    .addOption(new Option('--overlap <policy>', 'when the previous evacuation still runs').choices(OVERLAP_POLICIES).default('skip'))
    .option('--paused', 'create it paused', false)
    .option('--note <text>', 'why it exists (shown with it)')
    .action(async (id: string, o: SelectOptions & { source: string; cron?: string; every?: string; overlap: OverlapPolicy; paused: boolean; note?: string }, cmd: Command) => {
      const g = globals(cmd);
      const input = { scheduleId: id, evacuation: evacuationOf(o.source, o), overlap: o.overlap, paused: o.paused, ...(o.cron ? { cron: o.cron } : {}), ...(o.every ? { every: o.every } : {}), ...(o.note ? { note: o.note } : {}) };
      checkSchedule(input); // before anything connects
      const summary = await withClient(g, async (client) => {
        await createEvacuationSchedule(client, input);
        return describeEvacuationSchedule(client, id);
      });
      new Output(g.json).result(summary, () => [`created schedule ${id}`, ...scheduleLines(summary)]);
    });
  schedule.command('list').description('the evacuation schedules').action(async (_o: unknown, cmd: Command) => {
    const g = globals(cmd);
    const all = await withClient(g, (client) => listEvacuationSchedules(client));
    new Output(g.json).result(all, () => (all.length ? all.flatMap(scheduleLines) : ['no evacuation schedules']));
  });
  schedule.command('describe').description('a schedule: its times, plan, next runs and the evacuations it started').argument('<id>', 'schedule id')
    .action(async (id: string, _o: unknown, cmd: Command) => {
      const g = globals(cmd);
      const summary = await withClient(g, (client) => describeEvacuationSchedule(client, id));
      new Output(g.json).result(summary, () => scheduleLines(summary));
    });
  const simple = (name: string, description: string, act: (client: Parameters<Parameters<typeof withClient>[1]>[0], id: string, note?: string) => Promise<void>, withNote = false) => {
    const command = schedule.command(name).description(description).argument('<id>', 'schedule id');
    if (withNote) command.option('--note <text>', 'why (shown with the schedule)');
    command.action(async (id: string, o: { note?: string }, cmd: Command) => {
      const g = globals(cmd);
      await withClient(g, (client) => act(client, id, o.note));
      new Output(g.json).result({ scheduleId: id, done: name }, () => [`${name}: ${id}`]);
    });
  };
  simple('pause', 'stop starting evacuations until unpaused', (c, id, note) => pauseSchedule(c, id, note), true);
  simple('unpause', 'start evacuations at its times again', (c, id, note) => unpauseSchedule(c, id, note), true);
  simple('trigger', 'start its evacuation now (under its overlap policy)', (c, id) => triggerSchedule(c, id));
  simple('delete', 'remove the schedule (evacuations it started go on)', (c, id) => deleteSchedule(c, id));
}
