/** The migration's report, as the workflow returns it: where the time went, what moved, what was checked. */
import { categorize } from '../../lib/report-categories';
import type { MigrationReport } from '../../lib/types';
import type { MigrationContext } from './context';

export function migrationReport(ctx: MigrationContext): MigrationReport {
  const { plan, report } = ctx;
  const wallMs = Date.now() - ctx.startedAt;
  return {
    plan: plan.name,
    source: plan.source,
    destination: plan.destination,
    startedAt: ctx.startedAt,
    wallMs,
    categories: categorize(report.phases, wallMs),
    ...(report.dnsSwitchMs !== undefined ? { dnsSwitchMs: report.dnsSwitchMs } : {}),
    phases: report.phases,
    containers: report.containers,
    groups: report.groups,
    bytesMoved: ctx.progress.bytesMoved,
    warnings: report.warnings,
    events: report.events,
  };
}
