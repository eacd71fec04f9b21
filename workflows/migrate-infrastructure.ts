/**
 * The migration workflow: deterministic orchestration only. It decides the order of the stages,
 * routes each activity to the worker that lives in the right cloud (one task queue per cloud),
 * records a compensation before every step that changes something, and exposes progress.
 *
 * Stages: inventory → pre-flight → network → per group of containers: prepare → pre-copy → predict →
 * approval gate → freeze (checkpoints) → transfer → restore → [post-copy window: the memory follows]
 * → commit of the group → release.
 * Within a group the steps run for every member at once (transfers a few at a time).
 *
 * Exactly once (docs/failure-model.md):
 * - Before a group's commit, any failure, an abort or a cancel rolls back (workflows/saga.ts: the
 *   fences, then what the source needs, then the resumes, then clean-up; a dead cloud's clean-up
 *   is left to a follow-up workflow), in a scope that cannot be cancelled. After its commit,
 *   nothing of it is undone.
 * - Fencing: the source is resumed only once the destination copy is proven gone — discarded by
 *   the destination, or never started (Temporal records that no restore attempt began). When it
 *   cannot be proven, the container stays frozen at the source with its complete image, the
 *   workflow says so (state "frozen-at-source") and waits for the proof or an operator's word.
 * - Every step has a time budget; the frozen steps share the plan's blackout budget.
 */
import {
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  condition,
  defineQuery,
  defineSignal,
  isCancellation,
  log,
  proxyActivities,
  setHandler,
  sleep,
  startChild,
  TimeoutFailure,
  workflowInfo,
  type ActivityOptions,
} from '@temporalio/workflow';
import type { CloudActivities, ContainerStep, DigestMismatchDetails } from '../activities/cloud-activities';
import { cloudTaskQueue, parsePlan, planGroups, PlanError, type MigrationPlan } from '../lib/plan';
import { categorize } from '../lib/report-categories';
import { predictBlackout } from '../lib/prediction';
import type {
  ArtifactCheck,
  ArtifactReceipt,
  ContainerReport,
  DnsRecord,
  GroupReport,
  MigrationProgress,
  MigrationReport,
  PageSource,
  PhaseTiming,
  PostCopyReport,
  PublicConnection,
  TransferEndpoint,
  TransferHeartbeat,
  VolumeReceipt,
  VolumeReport,
} from '../lib/types';
import { cleanUpAfterRollback } from './clean-up-after-rollback';
import { faults } from './fault-sinks';
import { DEAD_WORKER_MS, Saga, type Compensation, type SagaRunner, type UndoStep } from './saga';

export const progressQuery = defineQuery<MigrationProgress>('progress');
/** Operator: go ahead with the freeze (plans with options.approveCutover). */
export const approveCutoverSignal = defineSignal('approveCutover');
/** Operator: stop before the commit point and roll back; interrupts the running step. */
export const abortSignal = defineSignal<[reason?: string]>('abort');
/**
 * Operator: the destination copy of the container being rolled back is gone (checked by hand),
 * so the source may resume. Only read while the workflow is "frozen-at-source".
 */
export const confirmDestinationGoneSignal = defineSignal('confirmDestinationGone');

/**
 * A worker that stops heartbeating is given up after this long. Activities beat on progress and
 * give themselves up after 5 s without it (activities/attempt.ts), so this only catches dead workers.
 */
const HEARTBEAT_TIMEOUT = '8 seconds';
/** How many times an artifact that arrived corrupt is sent again before the migration gives up. */
const MAX_RESENDS = 2;
/** Restore calls (each one attempt) within the blackout budget. */
const MAX_RESTORE_CALLS = 5;
/** How often a broken fence is retried while the source waits frozen. */
const FENCE_RETRY_SECONDS = 15;
/** How many times a post-copy window restarts a lost page source before the group is rolled back. */
const MAX_PAGE_SOURCE_RESTARTS = 5;
/**
 * A restored copy's lease (providers/runtime/fence-timer.ts): it dies this long after the last
 * renewal that may have reached its cloud, unless its group commits. Longer than the orchestrator
 * takes to come back after a crash (Temporal's workflow-task timeout, 10 s): a good copy must
 * outlive that.
 */
const LEASE_MS = 15_000;
/** How often the workflow renews the leases of a group being restored (each renewal waits this long at most). */
const LEASE_RENEW_MS = 3_000;
/** Allowance for the clocks of the orchestrator and a destination host, before a lease is taken as ended. */
const LEASE_CLOCK_MARGIN_MS = 1_000;

/** Activities of one cloud with the given time budget (every step is bounded). */
function on(cloud: string, opts: Partial<ActivityOptions> & { scheduleToCloseMs: number }) {
  const { scheduleToCloseMs, ...rest } = opts;
  return proxyActivities<CloudActivities>({
    taskQueue: cloudTaskQueue(cloud),
    scheduleToCloseTimeout: Math.max(1000, Math.round(scheduleToCloseMs)),
    heartbeatTimeout: HEARTBEAT_TIMEOUT,
    // A cancelled step has stopped before the compensations start (never two at work at once).
    cancellationType: 'WAIT_CANCELLATION_COMPLETED',
    retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '4s' },
    ...rest,
  });
}

function describe(err: unknown): string {
  if (err instanceof ActivityFailure) {
    if (err.cause instanceof TimeoutFailure) {
      // Out of time after failed attempts: the last one says why (e.g. the peer was unreachable).
      const last = err.cause.cause?.message;
      return `${err.activityType} timed out (${err.cause.timeoutType})${last ? `, last attempt: ${last}` : ': is the worker of that cloud running and reachable?'}`;
    }
    if (isCancellation(err)) return `${err.activityType} was cancelled`;
    return `${err.activityType} failed: ${err.cause?.message ?? err.message}`;
  }
  return err instanceof Error ? err.message : String(err);
}

/** True when Temporal recorded that this call's activity never started on any worker (none took it in time). */
function neverStarted(err: unknown): boolean {
  return err instanceof ActivityFailure && err.cause instanceof TimeoutFailure && err.cause.timeoutType === 'SCHEDULE_TO_START';
}

function failureType(err: unknown): string | undefined {
  return err instanceof ActivityFailure && err.cause instanceof ApplicationFailure ? err.cause.type ?? undefined : undefined;
}

function mismatch(err: unknown): DigestMismatchDetails | undefined {
  if (failureType(err) !== 'DigestMismatch') return undefined;
  return ((err as ActivityFailure).cause as ApplicationFailure).details?.[0] as DigestMismatchDetails | undefined;
}

/** Bytes a transfer that failed for good had written to the link (its last heartbeat says). */
function wireBytesOfFailure(err: unknown): number {
  if (err instanceof ActivityFailure && err.cause instanceof TimeoutFailure) {
    return (err.cause.lastHeartbeatDetails as TransferHeartbeat | undefined)?.wireBytes ?? 0;
  }
  return 0;
}

/**
 * Runs `task` for every item, at most `limit` at a time, and waits until every one has settled
 * (never leaves a step running behind a failure: the rollback must not race it); then returns
 * the results in order, or throws the first failure.
 */
async function settleAll<T, R>(items: T[], task: (item: T, index: number) => Promise<R>, limit = items.length): Promise<R[]> {
  const results: Array<PromiseSettledResult<R>> = new Array(items.length);
  let next = 0;
  const runner = async () => {
    for (let i = next++; i < items.length; i = next++) {
      try {
        results[i] = { status: 'fulfilled', value: await task(items[i]!, i) };
      } catch (reason) {
        results[i] = { status: 'rejected', reason };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, runner));
  const failed = results.find((r) => r.status === 'rejected');
  if (failed) throw (failed as PromiseRejectedResult).reason;
  return results.map((r) => (r as PromiseFulfilledResult<R>).value);
}

interface RootfsCopy {
  sent: ArtifactReceipt;
  check: ArtifactCheck;
  resends: number;
}

/** Filler sent through the image stream just before a freeze to measure the link (~70 ms at 1 Gbit/s). */
const LINK_PROBE_BYTES = 8 << 20;

/** How long the DNS switch may take (retries included) before the group is rolled back. */
const DNS_SWITCH_MS = 20_000;

/** Connections of `before` still in `now` (same client address and port). */
function stillOpen(before: PublicConnection[], now: PublicConnection[]): number {
  return before.filter((b) => now.some((n) => n.client === b.client && n.clientPort === b.clientPort)).length;
}

/** The A records pointing the containers' public names at the given addresses, grouped by the cloud and zone that serve them. */
function redirectRecords(steps: ContainerStep[], addressOf: (container: string) => string | undefined): Array<{ dnsCloud: string; zone: string; records: DnsRecord[] }> {
  const byZone = new Map<string, { dnsCloud: string; zone: string; records: Map<string, DnsRecord> }>();
  for (const step of steps) {
    const address = addressOf(step.container.name);
    if (!address) continue;
    for (const n of step.container.publicNames ?? []) {
      const key = `${n.dnsCloud}/${n.zone}`;
      const entry = byZone.get(key) ?? { dnsCloud: n.dnsCloud, zone: n.zone, records: new Map<string, DnsRecord>() };
      const record = entry.records.get(n.name) ?? { name: n.name, ttl: n.ttl, addresses: [] };
      record.addresses.push(address);
      entry.records.set(n.name, record);
      byZone.set(key, entry);
    }
  }
  return [...byZone.values()].map((e) => ({ dnsCloud: e.dnsCloud, zone: e.zone, records: [...e.records.values()] }));
}

interface VolumeCopy {
  receipts: VolumeReceipt[];
  checks: ArtifactCheck[];
  ms: number;
}

function volumeReport(pre: VolumeCopy, final: VolumeCopy): VolumeReport {
  const sum = (rs: VolumeReceipt[], f: (r: VolumeReceipt) => number) => rs.reduce((s, r) => s + f(r), 0);
  return {
    volumes: pre.receipts.length,
    preBytes: sum(pre.receipts, (r) => r.bytes),
    preEntries: sum(pre.receipts, (r) => r.changedEntries),
    finalBytes: sum(final.receipts, (r) => r.bytes),
    finalEntries: sum(final.receipts, (r) => r.changedEntries),
    deletedEntries: sum(final.receipts, (r) => r.deletedEntries),
    finalMs: final.ms,
  };
}

export async function migrateInfrastructure(input: unknown): Promise<MigrationReport> {
  let plan: MigrationPlan;
  try {
    plan = parsePlan(input);
  } catch (err) {
    if (err instanceof PlanError) throw ApplicationFailure.nonRetryable(err.message, 'InvalidPlan');
    throw err;
  }
  const { workflowId } = workflowInfo();
  const migrationId = workflowId.replace(/[^A-Za-z0-9._-]/g, '_');
  const { options } = plan;
  const keepTcp = options.keepTcpConnections;
  const budgetMs = options.blackoutBudgetSeconds * 1000;
  const rollbackMs = options.rollbackTimeoutSeconds * 1000;

  // Bounded activity stubs per kind of step.
  const probe = (cloud: string) => on(cloud, { scheduleToCloseMs: 60_000 });
  const control = (cloud: string) => on(cloud, { scheduleToCloseMs: 120_000 });
  const precopy = (cloud: string) => on(cloud, { scheduleToCloseMs: options.transferTimeoutSeconds * 1000 });
  const undoing = (cloud: string) => on(cloud, { scheduleToCloseMs: rollbackMs });
  const src = { probe: probe(plan.source), control: control(plan.source), precopy: precopy(plan.source), undo: undoing(plan.source) };
  const dst = { probe: probe(plan.destination), control: control(plan.destination), precopy: precopy(plan.destination), undo: undoing(plan.destination) };
  // Clean-up at the destination once nothing waits on it: a worker that is down is said to be so in seconds, not retried for minutes.
  const dstCleanup = on(plan.destination, { scheduleToCloseMs: rollbackMs, scheduleToStartTimeout: DEAD_WORKER_MS });

  const startedAt = Date.now();
  const phases: PhaseTiming[] = [];
  const events: string[] = [];
  const warnings: string[] = [];
  const containers: ContainerReport[] = [];
  const groups: GroupReport[] = [];
  const progress: MigrationProgress = { state: 'running', phase: 'starting', phases, bytesMoved: 0 };
  setHandler(progressQuery, () => progress);
  const note = (event: string) => {
    events.push(event);
    log.info(event);
  };

  // Abort and cancel are the same clean rollback: both cancel the running stage.
  const work = new CancellationScope();
  let approved = !options.approveCutover;
  let abortReason: string | undefined;
  let destinationConfirmedGone = false;
  setHandler(approveCutoverSignal, () => {
    approved = true;
  });
  setHandler(confirmDestinationGoneSignal, () => {
    destinationConfirmedGone = true;
  });
  setHandler(abortSignal, (reason) => {
    abortReason ??= reason || 'aborted by the operator';
    work.cancel();
  });

  async function phase<T>(name: string, container: string | undefined, step: () => Promise<T>): Promise<T> {
    progress.phase = name;
    progress.container = container;
    faults.point(`phase:${name}`, migrationId);
    const begin = Date.now();
    try {
      return await step();
    } finally {
      phases.push({ phase: name, ...(container ? { container } : {}), startedAt: begin, durationMs: Date.now() - begin });
    }
  }

  const saga = new Saga();
  /** The renewals of the leases of the group being restored (until its commit or rollback). */
  let leases: { stop(): void } | undefined;
  /** When the group frozen now runs out of its blackout budget (none frozen: undefined). */
  let freezeDeadline: number | undefined;
  /** Members whose outside connections are drained after the move. */
  const draining: Member[] = [];
  let dnsSwitchMs: number | undefined;
  /** The source's public address (known after inventory): drained replies go back through it. */
  let sourcePublicIp = '';
  // The containers claimed: the plan's, or the VI's as inventory finds them.
  const claim = { migrationId, workflowId, containers: plan.containers ?? [] };

  /** Sends the checkpoint (again, for `only` files) within the blackout budget; counts the bytes. */
  async function sendCheckpoint(step: ContainerStep, endpoint: TransferEndpoint, imageDir: string, remainingMs: number, only?: string[]): Promise<ArtifactReceipt> {
    try {
      const sent = await on(plan.source, { scheduleToCloseMs: remainingMs }).sendCheckpoint({ ...step, endpoint, imageDir, ...(only ? { only } : {}) });
      progress.bytesMoved += sent.wireBytes;
      if (sent.resumedBytes > 0) note(`${step.container.name}: checkpoint transfer resumed after a failed attempt; ${sent.resumedBytes} bytes were not sent again`);
      return sent;
    } catch (err) {
      progress.bytesMoved += wireBytesOfFailure(err);
      throw err;
    }
  }

  /** Pre-copy or in-freeze copy of the rootfs: sent, re-hashed and unpacked at the destination; resent if corrupt. */
  async function copyRootfs(step: ContainerStep, endpoint: TransferEndpoint, stubs: { src: CloudActivities; dst: CloudActivities }): Promise<RootfsCopy> {
    for (let resends = 0; ; resends++) {
      let sent: ArtifactReceipt;
      try {
        sent = await stubs.src.sendRootfs({ ...step, endpoint });
      } catch (err) {
        progress.bytesMoved += wireBytesOfFailure(err);
        throw err;
      }
      progress.bytesMoved += sent.wireBytes;
      try {
        const check = await stubs.dst.receiveRootfs({ ...step, artifact: sent });
        return { sent, check, resends };
      } catch (err) {
        if (!mismatch(err) || resends >= MAX_RESENDS) throw err;
        note(`${step.container.name}: rootfs arrived corrupt (${mismatch(err)!.problems.join('; ')}); sending it again`);
      }
    }
  }

  /** One round of a container's volumes: sent by the source, applied and re-hashed by the destination. */
  async function copyVolumes(step: ContainerStep, endpoint: TransferEndpoint, round: 'pre' | 'final', stubs: { src: CloudActivities; dst: CloudActivities }): Promise<VolumeCopy> {
    const started = Date.now();
    const receipts = await stubs.src.sendVolumes({ ...step, endpoint, round });
    progress.bytesMoved += receipts.reduce((sum, r) => sum + r.wireBytes, 0);
    const checks = await stubs.dst.receiveVolumes({ ...step, receipts });
    return { receipts, checks, ms: Date.now() - started };
  }

  /** One container of a group in the blackout: what it needs and what happened to it. */
  interface Member {
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

  /**
   * Restores one container of the group at the destination, one attempt per call, within the
   * budget: a corrupt image is sent again (only its bad files), a failed attempt is retried, and
   * the member records whether a restore may have started (the fence depends on it).
   */
  async function restoreMember(m: Member, imageDir: string, sent: ArtifactReceipt, remaining: () => number, concurrent: number, postCopy?: PageSource) {
    const name = m.step.container.name;
    let image = sent;
    for (let call = 1; ; call++) {
      const restoreStub = on(plan.destination, {
        scheduleToStartTimeout: remaining(),
        startToCloseTimeout: '2 minutes',
        scheduleToCloseMs: remaining() + 120_000,
        retry: { maximumAttempts: 1 },
      });
      // The copy's lease: it dies then unless renewed or committed (a dead destination cannot keep the source frozen past it).
      const fenceUntil = Date.now() + LEASE_MS;
      const leaseBefore = m.leaseUntil;
      m.leaseUntil = Math.max(m.leaseUntil ?? 0, fenceUntil);
      try {
        const restored = await restoreStub.restore({ ...m.step, image, keepTcp, concurrent, fenceUntil, ...(postCopy ? { postCopy } : {}) });
        m.restoreMayHaveStarted = true; // it runs there now: a group rollback must fence it too
        if (restored.completedEarlierAttempt) note(`${name}: an earlier restore attempt had restored it; the retry completed the step`);
        return { restored, image, restoredAt: Date.now() };
      } catch (err) {
        if (!neverStarted(err)) m.restoreMayHaveStarted = true;
        else m.leaseUntil = leaseBefore; // no worker took this call: its lease never reached the destination
        if (isCancellation(err)) throw err;
        const bad = mismatch(err);
        if (bad && m.resends < MAX_RESENDS) {
          m.resends++;
          note(`${name}: checkpoint arrived corrupt (${bad.problems.join('; ')}); sending ${bad.badFiles.join(', ')} again`);
          const again = await sendCheckpoint(m.step, m.endpoint, imageDir, remaining(), bad.badFiles);
          const merged = new Map((image.files ?? []).map((f) => [f.name, f]));
          for (const f of again.files ?? []) merged.set(f.name, f);
          image = { ...again, files: [...merged.values()].sort((a, b) => a.name.localeCompare(b.name)), bytes: image.bytes, sha256: sent.sha256 };
          continue;
        }
        const retryable = !(err instanceof ActivityFailure && err.cause instanceof ApplicationFailure && err.cause.nonRetryable);
        if (!retryable || call >= MAX_RESTORE_CALLS || neverStarted(err)) throw err;
        note(`${name}: restore attempt ${call} failed (${describe(err)}); trying again`);
      }
    }
  }

  /**
   * The blackout of one group: every member frozen (checkpoints in parallel), its image (and a
   * writable rootfs) sent a few at a time, every member restored in parallel — all within the
   * blackout budget. The group commits only when every member is restored; until then a failure
   * rolls the whole group back. Returns each member's report and the group's blackout.
   */
  async function cutOverGroup(label: string, members: Member[]): Promise<{ reports: ContainerReport[]; frozenMs: number }> {
    const frozenFrom = Date.now();
    const deadline = frozenFrom + budgetMs;
    freezeDeadline = deadline;
    const remaining = () => {
      const left = deadline - Date.now();
      if (left < 1000) throw ApplicationFailure.nonRetryable(`${label} stayed frozen for the whole blackout budget (${options.blackoutBudgetSeconds} s)`, 'BlackoutBudgetExceeded');
      return left;
    };
    for (const { step } of members) {
      saga.record({ what: `resume ${step.container.name} at ${plan.source}`, role: 'resume', cloud: plan.source, activity: 'resumeAtSource', input: { ...step, keepTcp }, container: step.container.name });
    }
    // Each image streams to the destination while CRIU writes it (the checkpoint returns what it sent).
    const images = await phase('checkpoint', label, () =>
      settleAll(members, async (m) => {
        try {
          const image = await on(plan.source, { scheduleToCloseMs: remaining() }).checkpoint({ ...m.step, keepTcp, endpoint: m.endpoint, postCopy: options.postCopy, concurrent: members.length });
          progress.bytesMoved += image.sent?.wireBytes ?? 0;
          if (image.sent?.resumedBytes) note(`${m.step.container.name}: checkpoint transfer resumed after a failed attempt; ${image.sent.resumedBytes} bytes were not sent again`);
          return image;
        } catch (err) {
          progress.bytesMoved += wireBytesOfFailure(err);
          throw err;
        }
      }),
    );
    // Outside connections open through a floating IP are frozen now: their replies, once the
    // container runs at the destination, must leave through the source's edge (which holds
    // their NAT). Set up before the restore, while nothing can send.
    const publicMembers = members.filter((m) => m.step.container.floatingIp);
    if (options.drainTimeoutSeconds > 0 && publicMembers.length) {
      await phase('drain-setup', label, () =>
        settleAll(publicMembers, async (m) => {
          m.connections = await on(plan.source, { scheduleToCloseMs: remaining() }).publicConnections(m.step);
          if (!m.connections.length) return;
          saga.record({ what: `stop routing ${m.step.container.name}'s drained replies at ${plan.destination}`, role: 'cleanup', cloud: plan.destination, activity: 'routeReplies', input: { ...m.step, connections: [], peerPublicIp: sourcePublicIp } });
          await on(plan.destination, { scheduleToCloseMs: remaining() }).routeReplies({ ...m.step, connections: m.connections, peerPublicIp: sourcePublicIp });
        }),
      );
    }
    const sent = await phase('transfer', label, async () => {
      progress.transferTotalBytes = images.reduce((sum, image) => sum + image.imageBytes, 0);
      const result = await settleAll(members, async (m, i) => {
        const checkpointSent = images[i]!.sent ?? (await sendCheckpoint(m.step, m.endpoint, images[i]!.imageDir, remaining()));
        const frozenStubs = { src: on(plan.source, { scheduleToCloseMs: remaining() }), dst: on(plan.destination, { scheduleToCloseMs: remaining() }) };
        const rootfs = m.preCopied ?? (await copyRootfs(m.step, m.endpoint, frozenStubs));
        m.resends += rootfs.resends;
        // Only what the container wrote since the pre round: the blackout does not grow with the volume.
        const volumes = m.preVolumes ? await copyVolumes(m.step, m.endpoint, 'final', frozenStubs) : undefined;
        return { checkpointSent, rootfs, volumes };
      }, options.parallelTransfers);
      progress.transferTotalBytes = undefined;
      return result;
    });
    for (const m of members) {
      saga.record({
        what: `discard ${m.step.container.name} at ${plan.destination}`,
        role: 'fence',
        cloud: plan.destination,
        activity: 'discardContainer',
        input: m.step,
        required: () => m.restoreMayHaveStarted,
        leaseEnds: () => (m.leaseUntil === undefined || m.disarmStarted ? undefined : m.leaseUntil + LEASE_CLOCK_MARGIN_MS),
      });
    }
    leases = keepLeases(members);
    const restored = await phase('restore', label, () =>
      settleAll(members, (m, i) => {
        const postCopy = images[i]!.postCopy;
        return restoreMember(m, images[i]!.sentDir ?? images[i]!.imageDir, sent[i]!.checkpointSent, remaining, members.length, postCopy && { ...postCopy, holdUntilWindow: members.length > 1 });
      }),
    );
    const frozenMs = Date.now() - frozenFrom;
    // Post-copy: the group runs at the destination; its memory follows from the source's image.
    // The group commits only once every page is in: until then a failure rolls it back.
    let windows: Array<PostCopyReport | undefined> = [];
    if (options.postCopy) {
      try {
        windows = await phase('post-copy', label, () => settleAll(members, (m, i) => (images[i]!.postCopy ? awaitMemory(m, images[i]!.postCopy!) : Promise.resolve(undefined))));
      } catch (err) {
        // Every member already runs at the destination: a rollback restarts each from its image of the freeze.
        for (const [i, m] of members.entries()) {
          note(`${m.step.container.name} ran at ${plan.destination} for ${Date.now() - restored[i]!.restoredAt} ms after its restore: a rollback now loses what it did there (its source copy restarts from the image taken at the freeze)`);
        }
        throw err;
      }
    }
    const reports = members.map((m, i): ContainerReport => ({
      name: m.step.container.name,
      frozenMs: restored[i]!.restoredAt - frozenFrom,
      checkpointMs: images[i]!.durationMs,
      restoreMs: restored[i]!.restored.durationMs,
      imageBytes: images[i]!.imageBytes,
      artifacts: [sent[i]!.rootfs.sent, restored[i]!.image],
      checks: [sent[i]!.rootfs.check, ...(m.preVolumes?.checks ?? []), ...(sent[i]!.volumes?.checks ?? []), restored[i]!.restored.check],
      resends: m.resends,
      ...(m.preVolumes && sent[i]!.volumes ? { volumes: volumeReport(m.preVolumes, sent[i]!.volumes!) } : {}),
      ...(windows[i] ? { postCopy: windows[i] } : {}),
      ...(m.step.container.floatingIp ? { floatingIp: { source: m.step.container.floatingIp.address, destination: restored[i]!.restored.floatingIp } } : {}),
    }));
    return { reports, frozenMs };
  }

  /**
   * Renews the leases of the group's restored copies while the workflow hears from their cloud.
   * A renewal that no worker took is known not to have arrived; one that was taken may have, and
   * counts (the lease then ends later than the workflow can be sure of otherwise).
   */
  function keepLeases(members: Member[]): { stop(): void } {
    let stopped = false;
    const renew = async (m: Member) => {
      const before = m.leaseUntil!;
      const until = Date.now() + LEASE_MS;
      m.leaseUntil = Math.max(before, until);
      try {
        await on(plan.destination, { scheduleToCloseMs: LEASE_RENEW_MS, scheduleToStartTimeout: LEASE_RENEW_MS, retry: { maximumAttempts: 1 } }).renewFence({ migrationId, containerName: m.step.container.name, until });
      } catch (err) {
        if (neverStarted(err)) m.leaseUntil = before;
      }
    };
    void (async () => {
      try {
        while (!(await condition(() => stopped, LEASE_RENEW_MS))) {
          await Promise.all(members.filter((m) => m.leaseUntil !== undefined && !m.disarmStarted).map(renew));
        }
      } catch (err) {
        if (!isCancellation(err)) throw err; // an abort: the rollback takes over
      }
    })();
    return { stop: () => (stopped = true) };
  }

  /** The commit of a restored group at its destination: every copy's lease stops, or the group rolls back. */
  async function commitCopies(members: Member[]): Promise<void> {
    try {
      await settleAll(members, async (m) => {
        m.disarmStarted = true;
        try {
          await on(plan.destination, { scheduleToCloseMs: LEASE_MS, scheduleToStartTimeout: DEAD_WORKER_MS }).disarmFence(m.step);
        } catch (err) {
          // Not taken by any worker, or its lease had run out (the copy was killed): its lease still tells.
          if (neverStarted(err) || failureType(err) === 'FenceExpired') m.disarmStarted = false;
          throw err;
        }
      });
    } finally {
      leases?.stop();
      leases = undefined;
    }
  }

  /**
   * Post-copy window of one member: waits for all of its memory at the destination. A lost page
   * source (the source's worker or page server died, the link was cut) is started again at the
   * source — its image is complete there — and the destination fills in what is missing; the
   * process meanwhile stalls on a missing page, never reads a wrong one.
   */
  async function awaitMemory(m: Member, source: PageSource): Promise<PostCopyReport> {
    const name = m.step.container.name;
    const recoveries: string[] = [];
    for (let lost = 0; ; lost++) {
      try {
        const report = await on(plan.destination, { scheduleToCloseMs: options.transferTimeoutSeconds * 1000 }).awaitPostCopy({ ...m.step, postCopy: source, recoveries });
        // The lazy memory crossed the link once (pages the worker filled in replaced the daemon's).
        progress.bytesMoved += source.lazyBytes;
        note(`${name}: all of its memory (${Math.round(source.lazyBytes / 1048576)} MiB after the restore) arrived in ${report.windowMs} ms${report.rescuedPages ? `, ${report.rescuedPages} pages copied in after a lost page source` : ''}`);
        return report;
      } catch (err) {
        if (failureType(err) !== 'PageSourceLost' || lost >= MAX_PAGE_SOURCE_RESTARTS) throw err;
        recoveries.push(describe(err));
        note(`${name}: ${describe(err)}; starting its page server at ${plan.source} again`);
        await on(plan.source, { scheduleToCloseMs: options.rollbackTimeoutSeconds * 1000 }).servePages({ ...m.step, port: source.port });
      }
    }
  }

  try {
    await work.run(async () => {
      const inventory = await phase('inventory', undefined, () => src.probe.inventory({ ...(plan.vi ? { vi: plan.vi } : {}), ...(plan.containers ? { containers: plan.containers } : {}) }));
      claim.containers = inventory.containers.map((c) => c.name);
      sourcePublicIp = inventory.source.publicIp;
      let groupsToMove: string[][];
      try {
        groupsToMove = planGroups(plan, claim.containers);
      } catch (err) {
        throw err instanceof PlanError ? ApplicationFailure.nonRetryable(`${err.message}\n(VI ${plan.vi} has ${claim.containers.join(', ')})`, 'InvalidPlan') : err;
      }
      const destination = await phase('preflight', undefined, async () => {
        const [, dstInfo] = await Promise.all([src.probe.preflight({ role: 'source', inventory }), dst.probe.preflight({ role: 'destination', inventory })]);
        const takenOver = await src.control.claimContainers(claim); // from here, no other migration may take these containers
        for (const stale of takenOver) note(`took over the stale claim on ${stale}`);
        return dstInfo;
      });
      const { networks } = inventory;

      // Each undo removes only what this migration created: an earlier migration's stretch stays.
      // The two sides are set up at once (neither needs the other's tunnel to exist); both
      // finish before a failure of either rolls back, and their undos are recorded in one order
      // (the source's unstretch runs first), whichever side finished first.
      await phase('network', undefined, async () => {
        const undos: Compensation[][] = [[], []];
        try {
          await settleAll([
            async () => {
              const created = await dst.control.replicateNetworks({ networks });
              undos[0]!.push({ what: `remove the replicated networks at ${plan.destination}`, role: 'cleanup', cloud: plan.destination, activity: 'removeNetworks', input: { names: created } });
              const dstStretched = await dst.control.stretchNetworks({ networks, peerPublicIp: inventory.source.publicIp });
              undos[0]!.push({ what: `unstretch the networks at ${plan.destination}`, role: 'cleanup', cloud: plan.destination, activity: 'unstretchNetworks', input: { networks: dstStretched, peerPublicIp: inventory.source.publicIp } });
            },
            async () => {
              const srcStretched = await src.control.stretchNetworks({ networks, peerPublicIp: destination.publicIp });
              undos[1]!.push({ what: `unstretch the networks at ${plan.source}`, role: 'cleanup', cloud: plan.source, activity: 'unstretchNetworks', input: { networks: srcStretched, peerPublicIp: destination.publicIp } });
            },
          ], (side) => side());
        } finally {
          for (const undo of undos.flat()) saga.record(undo);
        }
      });

      for (const names of groupsToMove) {
        const label = names.join(',');
        const steps: ContainerStep[] = names.map((name) => ({ migrationId, container: inventory.containers.find((c) => c.name === name)! }));
        // A rollback points the names at the source's addresses again before the source resumes
        // (bounded by the budget: workflows/saga.ts), whether or not a switch went through (a DNS
        // call that timed out may still have been applied); only once a switch was attempted: a
        // DNS service that is down must not hold up a rollback that never touched it.
        let switchAttempted = false;
        for (const { dnsCloud, zone, records } of redirectRecords(steps, (name) => steps.find((s) => s.container.name === name)?.container.floatingIp?.address)) {
          saga.record({
            what: `point ${records.map((r) => r.name).join(', ')} back to ${plan.source}`,
            role: 'before-resume',
            cloud: dnsCloud,
            activity: 'setDnsRecords',
            input: { zone, records },
            needed: () => switchAttempted,
          });
        }
        const endpoints = await phase('prepare', label, () =>
          settleAll(steps, (step) => {
            saga.record({ what: `remove ${step.container.name}'s port, bundle and files at ${plan.destination}`, role: 'cleanup', cloud: plan.destination, activity: 'discardPrepared', input: step });
            return dst.control.prepareDestination(step);
          }),
        );
        if (options.postCopy && endpoints.some((e) => !e.streamPort)) {
          throw ApplicationFailure.nonRetryable(`postCopy needs the destination's image stream, which ${plan.destination} does not offer: stopping before the freeze`, 'InvalidPlan');
        }
        // A read-only rootfs is copied while the container runs; a writable one can still change,
        // so it is copied after the freeze, inside the blackout.
        const readonly = steps.map((step, i) => ({ step, endpoint: endpoints[i]! })).filter(({ step }) => step.container.readonlyRootfs);
        // Volumes are copied while their container runs too; the freeze sends only what changed.
        const withVolumes = steps.map((step, i) => ({ step, endpoint: endpoints[i]! })).filter(({ step }) => step.container.volumes?.length);
        const [copies, volumeCopies] =
          readonly.length || withVolumes.length
            ? await phase('pre-copy', label, () =>
                Promise.all([
                  settleAll(readonly, ({ step, endpoint }) => copyRootfs(step, endpoint, { src: src.precopy, dst: dst.precopy }), options.parallelTransfers),
                  settleAll(withVolumes, ({ step, endpoint }) => copyVolumes(step, endpoint, 'pre', { src: src.precopy, dst: dst.precopy }), options.parallelTransfers),
                ]),
              )
            : [[], []];
        const members: Member[] = steps.map((step, i) => ({
          step,
          endpoint: endpoints[i]!,
          preCopied: copies[readonly.findIndex((r) => r.step === step)],
          preVolumes: volumeCopies[withVolumes.findIndex((r) => r.step === step)],
          restoreMayHaveStarted: false,
          resends: 0,
        }));
        for (const m of members) m.resends += m.preCopied?.resends ?? 0;
        // The blackout predicted from what was measured just now; over the budget, no freeze.
        let linkProbeBytes = 0;
        const predicted = await phase('predict', label, async () => {
          const [measured, destinationHost] = await Promise.all([
            src.probe.measureForPrediction({ migrationId, containers: steps.map((s) => s.container), endpoint: endpoints[0]!, probeBytes: LINK_PROBE_BYTES, postCopy: options.postCopy }),
            dst.probe.restoreRates({}),
          ]);
          progress.bytesMoved += measured.link.bytes;
          linkProbeBytes = measured.link.bytes;
          return predictBlackout({
            memberBytes: measured.memberBytes,
            linkBytesPerMs: measured.link.bytes / measured.link.ms,
            dumps: measured.dumps,
            dumpsInMemory: measured.dumpsInMemory,
            restores: destinationHost.restores,
            cores: { source: measured.cores, destination: destinationHost.cores },
            streamed: !!endpoints[0]!.streamPort,
            postCopy: options.postCopy,
          });
        });
        note(
          `${label}: blackout predicted ${(predicted.ms / 1000).toFixed(2)} s (image ~${Math.round(predicted.imageBytes / 1048576)} MiB: dump ${predicted.dumpMs} ms, ` +
            `transfer ${predicted.transferMs} ms at ${predicted.linkMbit} Mbit/s, restore ${predicted.restoreMs} ms; ${predicted.basis})`,
        );
        if (predicted.ms > budgetMs) {
          throw ApplicationFailure.nonRetryable(
            `the blackout of ${label} is predicted at ${(predicted.ms / 1000).toFixed(1)} s, over the plan's blackoutBudgetSeconds (${options.blackoutBudgetSeconds} s): ` +
              `stopping before the freeze (image ~${Math.round(predicted.imageBytes / 1048576)} MiB, link ${predicted.linkMbit} Mbit/s, dump ${predicted.dumpMs} ms, transfer ${predicted.transferMs} ms, restore ${predicted.restoreMs} ms)`,
            'BlackoutBudgetExceeded',
          );
        }
        if (!approved) {
          progress.state = 'awaiting-approval';
          progress.phase = 'awaiting approval';
          await condition(() => approved);
          progress.state = 'running';
        }
        const group = await cutOverGroup(label, members);
        // Its public names now lead to its floating IPs at the destination (through the cloud
        // that serves each zone), before the commit: a DNS service that fails here rolls the
        // group back (and the rollback puts the names back: see below).
        const toDestination = redirectRecords(steps, (name) => group.reports.find((r) => r.name === name)?.floatingIp?.destination);
        if (toDestination.length) {
          await phase('redirect', label, async () => {
            const started = Date.now();
            for (const { dnsCloud, zone, records } of toDestination) {
              switchAttempted = true;
              await on(dnsCloud, { scheduleToCloseMs: DNS_SWITCH_MS }).setDnsRecords({ zone, records });
              note(`DNS ${zone} at ${dnsCloud}: ${records.map((r) => `${r.name} → ${r.addresses.join(', ')}`).join('; ')}`);
            }
            dnsSwitchMs = (dnsSwitchMs ?? 0) + Date.now() - started;
          });
        }

        // The commit point: each copy stays for good (its lease stops); one whose lease ran out
        // was killed, and the group rolls back. Then the group lives at the destination, and the
        // stretched network must stay for it. Nothing done so far is to be undone any more.
        await commitCopies(members);
        saga.commit();
        freezeDeadline = undefined;
        containers.push(...group.reports);
        groups.push({ containers: names, frozenMs: group.frozenMs, predicted, linkProbeBytes });
        draining.push(...members.filter((m) => m.connections?.length));
        await CancellationScope.nonCancellable(() =>
          phase('release', label, () =>
            settleAll(steps, async (step) => {
              try {
                const draining = (members.find((m) => m.step === step)?.connections?.length ?? 0) > 0;
                await Promise.all([src.undo.releaseSource({ ...step, keepFloatingIp: draining }), dstCleanup.cleanupReceived(step)]);
              } catch (err) {
                warnings.push(`could not release ${step.container.name} at ${plan.source}: ${describe(err)}`);
                log.warn('release failed after commit', { container: step.container.name, error: describe(err) });
              }
            }),
          ),
        );
      }

      // Outside connections open through the old floating IPs: forwarded (over the stretched
      // network) until they close or the drain times out; then the old addresses go.
      if (draining.length) {
        await CancellationScope.nonCancellable(() =>
          phase('drain', undefined, async () => {
            const started = Date.now();
            const deadline = started + options.drainTimeoutSeconds * 1000;
            let open = draining.map((m) => ({ m, left: m.connections!.length }));
            while (open.some((o) => o.left > 0) && Date.now() < deadline) {
              await sleep(Math.min(1000, Math.max(1, deadline - Date.now())));
              open = await Promise.all(open.map(async (o) => ({ m: o.m, left: o.left > 0 ? stillOpen(o.m.connections!, await src.undo.publicConnections(o.m.step)) : 0 })));
            }
            for (const { m, left } of open) {
              const report = containers.find((c) => c.name === m.step.container.name);
              if (report) report.drain = { connections: m.connections!.length, closed: m.connections!.length - left, ms: Date.now() - started };
              note(`${m.step.container.name}: ${m.connections!.length} outside connection(s) drained through ${plan.source}'s old address, ${left} still open at the end`);
            }
            await endDrains();
          }),
        );
      }

      // The VI has left the source: the stretch goes, and the source's networks with their
      // bridges (a network something at the source still uses stays stretched).
      await CancellationScope.nonCancellable(() =>
        phase('release-networks', undefined, async () => {
          try {
            const released = await src.undo.releaseNetworks({ networks, peerPublicIp: destination.publicIp });
            if (released.length) await dst.undo.unstretchNetworks({ networks: released, peerPublicIp: inventory.source.publicIp });
          } catch (err) {
            warnings.push(`could not release the networks at ${plan.source}: ${describe(err)}`);
          }
        }),
      );
    });
  } catch (err) {
    const reason = abortReason ?? (isCancellation(err) ? 'the migration was cancelled' : describe(err));
    await CancellationScope.nonCancellable(() => rollBack(reason));
  }

  progress.state = 'completed';
  progress.phase = 'done';
  faults.point('phase:done', migrationId);
  if (warnings.length) log.warn('migration completed with warnings', { warnings });
  const wallMs = Date.now() - startedAt;
  return {
    plan: plan.name,
    source: plan.source,
    destination: plan.destination,
    startedAt,
    wallMs,
    categories: categorize(phases, wallMs),
    ...(dnsSwitchMs !== undefined ? { dnsSwitchMs } : {}),
    phases,
    containers,
    groups,
    bytesMoved: progress.bytesMoved,
    warnings,
    events,
  };

  /** Releases the old floating IPs of drained containers and stops routing their traffic back (each once). */
  async function endDrains(): Promise<void> {
    for (const m of draining.splice(0)) {
      try {
        await src.undo.releasePublicAddress(m.step);
        await dstCleanup.routeReplies({ ...m.step, connections: [], peerPublicIp: sourcePublicIp });
      } catch (err) {
        warnings.push(`could not end the drain of ${m.step.container.name}: ${describe(err)}`);
      }
    }
  }

  /**
   * A broken fence: the destination copy may be alive, so the source stays frozen with its image.
   * The workflow says so (state "frozen-at-source") and waits for proof: a retried discard that
   * succeeds, or an operator's confirmDestinationGone signal after checking the destination.
   */
  async function awaitFenceProof(fence: Compensation, why: string): Promise<void> {
    const frozenSince = Date.now();
    const what = (fence.input as ContainerStep).container.name;
    for (;;) {
      progress.state = 'frozen-at-source';
      progress.error = `${what} stays frozen at ${plan.source} with its complete checkpoint image: its copy at ${plan.destination} could not be proven gone (${fence.what}: ${why}). Retrying every ${FENCE_RETRY_SECONDS} s; an operator who made sure nothing of it runs at ${plan.destination} may signal confirmDestinationGone.`;
      progress.phase = `frozen at source: waiting for proof that ${what} is gone from ${plan.destination}`;
      if (await condition(() => destinationConfirmedGone, `${FENCE_RETRY_SECONDS} seconds`)) {
        note(`${what} stayed frozen at ${plan.source} for ${Math.round((Date.now() - frozenSince) / 1000)} s until the operator confirmed its copy at ${plan.destination} was gone (${why})`);
        break;
      }
      try {
        await on(plan.destination, { scheduleToCloseMs: FENCE_RETRY_SECONDS * 2000 }).discardContainer(fence.input as ContainerStep);
        note(`${what} stayed frozen at ${plan.source} for ${Math.round((Date.now() - frozenSince) / 1000)} s until ${plan.destination} proved its copy gone (first: ${why})`);
        break;
      } catch (err) {
        why = describe(err);
      }
    }
    progress.state = 'compensating';
  }

  /** How the saga's undos reach the clouds, and where the rollback reports to. */
  function sagaRunner(): SagaRunner {
    return {
      run: (step, bound) => {
        const stub = on(step.cloud, { scheduleToCloseMs: bound.ms, ...(bound.deadWorkerMs ? { scheduleToStartTimeout: bound.deadWorkerMs } : {}) });
        return (stub as unknown as Record<string, (input: unknown) => Promise<unknown>>)[step.activity]!(step.input);
      },
      awaitFenceProof,
      handOff: async (steps: UndoStep[]) => {
        const child = await startChild(cleanUpAfterRollback, { workflowId: `${workflowId}-cleanup`, args: [{ migration: workflowId, steps }], parentClosePolicy: 'ABANDON' });
        return child.workflowId;
      },
      workerDown: neverStarted,
      now: () => Date.now(),
      sleepUntil: (at) => sleep(Math.max(1, at - Date.now())),
      describe,
      stage: (what) => {
        progress.phase = what;
      },
      note,
    };
  }

  /** Runs the saga's rollback (fences, the source's side, resumes, then clean-up); always ends by throwing what happened. */
  async function rollBack(reason: string): Promise<never> {
    progress.state = 'compensating';
    progress.error = reason;
    log.error('migration failed, rolling back', { reason, compensations: saga.size });
    leases?.stop(); // from here the leases only run out
    const { undoFailures, handedOff } = await saga.rollBack(sagaRunner(), { rollbackMs, budgetLeftMs: () => (freezeDeadline === undefined ? undefined : freezeDeadline - Date.now()) });
    // Groups committed before the failure stay moved: their old addresses go now, undrained.
    await endDrains();
    // Containers not committed are free again (a committed one's claim went with its release).
    await src.undo.releaseClaims(claim).catch((undoErr: unknown) => undoFailures.push(`release the claims: ${describe(undoErr)}`));
    const moved = containers.map((c) => c.name);
    const where = moved.length
      ? `${moved.join(', ')} stay${moved.length === 1 ? 's' : ''} at ${plan.destination} (committed); the rest runs at the source`
      : 'the VI runs at the source';
    progress.state = 'failed';
    const lines = [`migration ${plan.name} failed: ${reason}`];
    lines.push(undoFailures.length ? `rolled back, but some cleanup failed: ${where}\n- ${undoFailures.join('\n- ')}` : `rolled back: ${where}`);
    if (handedOff) {
      const clouds = [...new Set(handedOff.steps.map((s) => s.cloud))].join(', ');
      lines.push(`clean-up left for when the worker of ${clouds} is back (workflow ${handedOff.workflowId}): ${handedOff.steps.map((s) => s.what).join('; ')}`);
    }
    if (events.length) lines.push(`on the way: ${events.join('; ')}`);
    // The undos and the stage each ran in, for those who check the order (test/unit/workflow.test.ts).
    const undos = saga.recorded();
    throw ApplicationFailure.nonRetryable(lines.join('\n'), 'MigrationFailed', { bytesMoved: progress.bytesMoved, events, undos, ...(handedOff ? { cleanupWorkflowId: handedOff.workflowId, cleanupSteps: handedOff.steps.map((s) => s.what) } : {}) });
  }
}
