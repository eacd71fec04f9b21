/**
 * The project's own metrics, exported with the SDK's on the orchestrator's Prometheus endpoint
 * (workers/telemetry.ts). The SDK does not emit workflow metrics while replaying, so a migration
 * recovered by a new orchestrator is not counted twice.
 */
import { metricMeter } from '@temporalio/workflow';
import type { GroupReport, ContainerReport } from '../../lib/types';
import type { MigrationContext } from './context';

const tagsOf = (ctx: MigrationContext) => ({ source: ctx.plan.source, destination: ctx.plan.destination, vi: ctx.plan.vi ?? ctx.plan.name });

export function countStarted(ctx: MigrationContext): void {
  metricMeter.createCounter('migravi_migrations_started', '{migration}', 'migrations started').add(1, tagsOf(ctx));
}

/** The end of a migration: completed or rolled back, and the bytes it wrote to the link. */
export function countEnded(ctx: MigrationContext, outcome: 'completed' | 'rolled_back'): void {
  metricMeter.createCounter(`migravi_migrations_${outcome}`, '{migration}', `migrations ${outcome.replace('_', ' ')}`).add(1, tagsOf(ctx));
  metricMeter.createCounter('migravi_link_bytes', 'By', 'bytes written to the inter-cloud link for artifacts, every attempt included').add(ctx.progress.bytesMoved, tagsOf(ctx));
}

/** A committed group's blackout, and each member's freeze. */
export function recordGroup(ctx: MigrationContext, group: Pick<GroupReport, 'frozenMs'>, members: ContainerReport[]): void {
  metricMeter.createHistogram('migravi_group_blackout', 'int', 'ms', "a committed group's blackout: first checkpoint to last restore").record(group.frozenMs, tagsOf(ctx));
  const freeze = metricMeter.createHistogram('migravi_container_freeze', 'int', 'ms', "a committed container's frozen time");
  for (const m of members) freeze.record(m.frozenMs, { ...tagsOf(ctx), container: m.name });
}
