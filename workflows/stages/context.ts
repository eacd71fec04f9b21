/**
 * What the stages of one migration share: the plan, the stubs of both clouds, the saga, the
 * progress operators query, and what the report will say. One object, made once by the workflow
 * and passed to every stage; a stage changes only the fields its comment names.
 */
import type { SearchAttributeUpdatePair } from '@temporalio/common';
import { log, patched, upsertSearchAttributes } from '@temporalio/workflow';
import { SEARCH_ATTRIBUTES } from '../../lib/search-attributes';
import type { CloudActivities, ContainerStep } from '../../activities/cloud-activities';
import type { MigrationPlan } from '../../lib/plan';
import { migrationIdOf } from '../../lib/plan';
import type { ArtifactCheck, ArtifactReceipt, ContainerProgress, ContainerReport, GroupReport, MigrationProgress, PhaseTiming, PublicConnection, TransferEndpoint, VolumeReceipt } from '../../lib/types';
import { faults } from '../fault-sinks';
import { Saga } from '../saga';
import { cleanupStub, cloudStubs, type CloudStubs } from './activity-stubs';

export interface MigrationContext {
  readonly plan: MigrationPlan;
  readonly options: MigrationPlan['options'];
  readonly workflowId: string;
  /** The workflow id as a name safe in paths at the clouds. */
  readonly migrationId: string;
  readonly budgetMs: number;
  readonly rollbackMs: number;
  readonly src: CloudStubs;
  readonly dst: CloudStubs;
  readonly dstCleanup: CloudActivities;
  readonly startedAt: number;
  readonly progress: MigrationProgress;
  readonly report: {
    readonly phases: PhaseTiming[];
    readonly events: string[];
    readonly warnings: string[];
    /** Containers committed at the destination. */
    readonly containers: ContainerReport[];
    readonly groups: GroupReport[];
    dnsSwitchMs?: number;
  };
  readonly saga: Saga;
  /** What operators said through signals. */
  readonly operator: { approved: boolean; abortReason?: string; destinationConfirmedGone: boolean };
  /** The renewals of the leases of the group being restored (until its commit or rollback). */
  leases?: { stop(): void };
  /** When the group frozen now runs out of its blackout budget (none frozen: undefined). */
  freezeDeadline?: number;
  /** Members of committed groups whose outside connections are drained after the move. */
  readonly draining: Member[];
  /** The source's public address (known after inventory): drained replies go back through it. */
  sourcePublicIp: string;
  /** The containers claimed at the source: the plan's, or the VI's as inventory finds them. */
  readonly claim: { migrationId: string; workflowId: string; containers: string[] };
  /** Its search attributes are kept current (false for a migration started before they were: it replays without them). */
  readonly searchable: boolean;
  /** The state and phase its search attributes say now. */
  readonly published: { state?: string; phase?: string };
}

export interface RootfsCopy {
  sent: ArtifactReceipt;
  check: ArtifactCheck;
  resends: number;
}

export interface VolumeCopy {
  receipts: VolumeReceipt[];
  checks: ArtifactCheck[];
  ms: number;
}

/** One container of a group in the blackout: what it needs and what happened to it. */
export interface Member {
  step: ContainerStep;
  endpoint: TransferEndpoint;
  preCopied?: RootfsCopy;
  /** The volumes' pre round (sent while the container ran). */
  preVolumes?: VolumeCopy;
  /** Outside connections open through its floating IP at the freeze (to drain after the move). */
  connections?: PublicConnection[];
  restoreMayHaveStarted: boolean;
  resends: number;
  /** The latest lease end its cloud may have been given (the workflow's clock). */
  leaseUntil?: number;
  /** Its cloud was asked to commit the copy and may have stopped its lease: the lease proves nothing any more. */
  disarmStarted?: boolean;
}

export function createContext(plan: MigrationPlan, workflowId: string): MigrationContext {
  const { options } = plan;
  const phases: PhaseTiming[] = [];
  const migrationId = migrationIdOf(workflowId);
  return {
    plan,
    options,
    workflowId,
    migrationId,
    budgetMs: options.blackoutBudgetSeconds * 1000,
    rollbackMs: options.rollbackTimeoutSeconds * 1000,
    src: cloudStubs(plan.source, options),
    dst: cloudStubs(plan.destination, options),
    dstCleanup: cleanupStub(plan.destination, options),
    startedAt: Date.now(),
    progress: { state: 'running', phase: 'starting', phases, bytesMoved: 0, containers: [] },
    report: { phases, events: [], warnings: [], containers: [], groups: [] },
    saga: new Saga(),
    operator: { approved: !options.approveCutover, destinationConfirmedGone: false },
    draining: [],
    sourcePublicIp: '',
    claim: { migrationId, workflowId, containers: plan.containers ?? [] },
    searchable: patched('search-attributes'),
    published: {},
  };
}

/** The migration's search attributes (VI, clouds, state, phase), set once at its start. */
export function announce(ctx: MigrationContext): void {
  if (!ctx.searchable) return;
  upsertSearchAttributes([
    { key: SEARCH_ATTRIBUTES.vi, value: ctx.plan.vi ?? ctx.plan.name },
    { key: SEARCH_ATTRIBUTES.source, value: ctx.plan.source },
    { key: SEARCH_ATTRIBUTES.destination, value: ctx.plan.destination },
  ]);
  publish(ctx);
}

/** Brings the search attributes up to the progress: its state and phase, where they changed. */
export function publish(ctx: MigrationContext): void {
  if (!ctx.searchable) return;
  const { state, phase: now } = ctx.progress;
  const pairs: SearchAttributeUpdatePair[] = [];
  if (state !== ctx.published.state) pairs.push({ key: SEARCH_ATTRIBUTES.state, value: state });
  if (now !== ctx.published.phase) pairs.push({ key: SEARCH_ATTRIBUTES.phase, value: now });
  if (!pairs.length) return;
  upsertSearchAttributes(pairs);
  Object.assign(ctx.published, { state, phase: now });
}

/** An event for the report (and the worker's log). */
export function note(ctx: MigrationContext, event: string): void {
  ctx.report.events.push(event);
  log.info(event, { vi: ctx.plan.vi ?? ctx.plan.name, phase: ctx.progress.phase, ...(ctx.progress.container ? { containers: ctx.progress.container } : {}) });
}

/** The containers the migration moves, each waiting until its group's first stage. */
export function trackContainers(ctx: MigrationContext, names: string[]): void {
  ctx.progress.containers = names.map((name): ContainerProgress => ({ name, state: 'waiting', phase: 'waiting', bytesMoved: 0 }));
}

/** Bytes a copy of `container` wrote to the link: in its own count and the migration's. */
export function countBytes(ctx: MigrationContext, container: string, bytes: number): void {
  ctx.progress.bytesMoved += bytes;
  const entry = ctx.progress.containers?.find((c) => c.name === container);
  if (entry) entry.bytesMoved += bytes;
}

/** The group's containers are `state` now (moved at its commit; rolled back, if they were moving, at a rollback). */
export function markContainers(ctx: MigrationContext, names: string[] | 'moving', state: ContainerProgress['state']): void {
  for (const entry of ctx.progress.containers ?? []) {
    if (names === 'moving' ? entry.state === 'moving' : names.includes(entry.name)) entry.state = state;
  }
}

/** Runs one stage of the migration (of one group, when `label` names it): progress says so, and its time goes into the report. */
export async function phase<T>(ctx: MigrationContext, name: string, label: string | undefined, step: () => Promise<T>): Promise<T> {
  ctx.progress.phase = name;
  ctx.progress.container = label;
  const members = label?.split(',') ?? [];
  for (const entry of ctx.progress.containers ?? []) {
    if (!members.includes(entry.name)) continue;
    entry.phase = name;
    if (entry.state === 'waiting') entry.state = 'moving';
  }
  publish(ctx);
  faults.point(`phase:${name}`, ctx.migrationId);
  log.info(`stage ${name}${label ? ` of ${label}` : ''}`, { vi: ctx.plan.vi ?? ctx.plan.name, phase: name, ...(label ? { containers: label } : {}) });
  const begin = Date.now();
  try {
    return await step();
  } finally {
    ctx.report.phases.push({ phase: name, ...(label ? { container: label } : {}), startedAt: begin, durationMs: Date.now() - begin });
  }
}
