/**
 * The workflow's logic against a real Temporal dev server, with the cloud activities replaced by
 * recorders: order of phases, task-queue routing, the report, the saga's rollback, fencing,
 * cancellation, budgets and resends.
 */
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ApplicationFailure } from '@temporalio/activity';
import { temporal } from '@temporalio/proto';
import { WorkflowFailedError, type WorkflowHandle } from '@temporalio/client';
import { abortMigration, approveCutover, confirmDestinationGone, RequestRefusedError, waitForState } from '../../client/migravi-client';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { bundleWorkflowCode, DefaultLogger, Runtime, Worker, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import type { CloudActivities, DigestMismatchDetails } from '../../activities/cloud-activities';
import { UNDO_ACTIVITIES, type UndoRole } from '../../workflows/saga';
import { waitFor } from '../../lib/processes';
import { SEARCH_ATTRIBUTES } from '../../lib/search-attributes';
import { repoRoot, temporalCliPath } from '../../lib/paths';
import { cloudTaskQueue, ORCHESTRATOR_TASK_QUEUE } from '../../lib/plan';
import type { EvacuationReport } from '../../lib/evacuation';
import type { ArtifactKind, ContainerSpec, Inventory, MigrationProgress, MigrationReport } from '../../lib/types';

const HISTORIES_DIR = path.join(repoRoot, 'test', 'fixtures', 'histories');

const kv: ContainerSpec = { name: 'kv', interfaces: [{ network: 'net', ip: '192.0.2.10', mac: '02:00:00:00:00:0a' }], args: ['/bin/kv'], readonlyRootfs: true };
const readonlyInventory: Inventory = {
  source: { cloud: 'cloud-a', publicIp: '203.0.113.11' },
  networks: [{ name: 'net', cidr: '192.0.2.0/24', vni: 7, mtu: 1450 }],
  containers: [kv],
};

type Override = (input: unknown, nth: number) => Promise<unknown>;

interface FakeOptions {
  /** "cloud:activity" or "cloud:activity#n" (the n-th call only): throws a non-retryable failure. */
  failAt?: string;
  inventory?: Inventory;
  /** "cloud:activity" → replacement behaviour (gets the call number, from 1). */
  overrides?: Record<string, Override>;
}

const imageFiles = [
  { name: 'core.img', bytes: 1000, sha256: 'c'.repeat(64) },
  { name: 'pages-1.img', bytes: 4000, sha256: 'p'.repeat(64) },
];

/** Fake activities for one cloud: each call is logged as "cloud:activity". */
function fakeCloud(cloud: string, calls: string[], opts: FakeOptions = {}): CloudActivities {
  const inventory = opts.inventory ?? readonlyInventory;
  const receipt = (kind: ArtifactKind, bytes: number, wireBytes: number) => ({ kind, remotePath: `/in/${kind}`, bytes, wireBytes, resumedBytes: 0, sha256: 'ab'.repeat(32), durationMs: 5 });
  const check = (kind: ArtifactKind, verifiedBytes: number) => ({ kind, files: kind === 'rootfs' ? 1 : 2, verifiedBytes, recomputedSha256: 'cd'.repeat(32), verifyMs: 3 });
  const impl: Record<string, (input: unknown) => Promise<unknown>> = {
    inventory: async () => inventory,
    describeCloud: async () => ({ cloud, networks: [], containers: [] }),
    preflight: async () => ({ cloud, publicIp: cloud === 'cloud-a' ? '203.0.113.11' : '203.0.113.12' }),
    claimContainers: async () => [],
    releaseClaims: async () => undefined,
    replicateNetworks: async () => ['net'],
    removeNetworks: async () => undefined,
    stretchNetworks: async () => inventory.networks,
    unstretchNetworks: async () => undefined,
    releaseNetworks: async () => inventory.networks,
    prepareDestination: async () => ({ host: '203.0.113.12', port: 22, username: 'root', hostKeySha256: 'x', directory: '/in' }),
    discardPrepared: async () => undefined,
    // 1 MiB of memory, the link probed at 8 MiB in 80 ms (~840 Mbit/s), no history: default host rates.
    measureForPrediction: async () => ({ memberBytes: [1 << 20], dumps: [], link: { bytes: 8 << 20, ms: 80 }, cores: 2, dumpsInMemory: false }),
    restoreRates: async () => ({ restores: [], cores: 2 }),
    sendRootfs: async () => receipt('rootfs', 1000, 1000),
    receiveRootfs: async () => ({ ...check('rootfs', 1000), unpackMs: 1 }),
    checkpoint: async () => ({ imageDir: '/img', imageBytes: 5000, durationMs: 7 }),
    // A transfer that needed a second attempt: 7000 bytes crossed the link for a 5000-byte image.
    sendCheckpoint: async () => ({ ...receipt('checkpoint', 5000, 7000), files: imageFiles }),
    restore: async () => ({ durationMs: 9, check: check('checkpoint', 5000), completedEarlierAttempt: false }),
    awaitPostCopy: async () => ({ windowMs: 40, lazyBytes: 1 << 20, rescuedPages: 0, droppedPages: 0, recoveries: [] }),
    servePages: async () => undefined,
    discardContainer: async () => undefined,
    renewFence: async () => undefined,
    disarmFence: async () => undefined,
    resumeAtSource: async () => 'restored-from-image',
    releaseSource: async () => undefined,
    cleanupReceived: async () => undefined,
    // The public face: one outside connection open through the floating IP, a DNS service, volumes.
    publicConnections: async () => [{ client: '198.51.100.7', clientPort: 40000, privateIp: '192.0.2.10', port: 7000 }],
    routeReplies: async () => undefined,
    releasePublicAddress: async () => undefined,
    setDnsRecords: async () => undefined,
    sendVolumes: async (input) => [{ kind: 'volume', index: 0, round: (input as { round: 'pre' | 'final' }).round, remotePath: '/in/volume-0', bytes: 300, wireBytes: 300, sha256: 'ab'.repeat(32), manifestSha256: 'ef'.repeat(32), changedEntries: 2, deletedEntries: 0, fileBytes: 200, durationMs: 2 }],
    receiveVolumes: async () => [check('volume', 200)],
  };
  return Object.fromEntries(
    Object.entries(impl).map(([name, fn]) => [
      name,
      async (input: unknown) => {
        const key = `${cloud}:${name}`;
        calls.push(key);
        const nth = calls.filter((c) => c === key).length;
        if (opts.failAt === key || opts.failAt === `${key}#${nth}`) throw ApplicationFailure.nonRetryable(`injected failure in ${name}`, 'Injected');
        const override = opts.overrides?.[key];
        return override ? override(input, nth) : fn(input);
      },
    ]),
  ) as unknown as CloudActivities;
}

/**
 * A finished workflow's history, as a release's fixture: its protobuf encoding (what the server
 * sends). Not JSON: the SDK's historyToJSON/historyFromJSON fail here ("type must be a Type"), as
 * @temporalio/common and @temporalio/proto 1.24 each bring their own copy of protobufjs.
 */
async function saveHistory(name: string, handle: WorkflowHandle): Promise<void> {
  await mkdir(HISTORIES_DIR, { recursive: true });
  // The workflow id is part of what replays (child workflow ids derive from it): it goes in the file name.
  await writeFile(path.join(HISTORIES_DIR, `${name}--${handle.workflowId}.binpb`), temporal.api.history.v1.History.encode(await handle.fetchHistory()).finish());
}

interface Harness {
  calls: string[];
  /** Stops a cloud's worker (nobody polls its task queue any more). */
  stopCloud(cloud: string): Promise<void>;
  /** Starts a cloud's worker again. */
  startCloud(cloud: string): void;
}

describe('migrateInfrastructure workflow (activities replaced)', function () {
  this.timeout(90_000);
  let env: TestWorkflowEnvironment;
  let bundle: WorkflowBundleWithSourceMap;

  before(async () => {
    // The rollback tests make the workflow log errors on purpose: keep the test output readable.
    Runtime.install({ logger: new DefaultLogger('ERROR', () => undefined) });
    env = await TestWorkflowEnvironment.createLocal({ server: { executable: { type: 'existing-path', path: temporalCliPath }, searchAttributes: Object.values(SEARCH_ATTRIBUTES) } });
    bundle = await bundleWorkflowCode({ workflowsPath: require.resolve('../../workflows'), logger: { log: () => undefined, trace: () => undefined, debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined } });
  });

  after(async () => {
    await env?.teardown();
  });

  /** Runs one migration with an orchestrator and two fake cloud workers; returns the result and the calls. */
  async function migrate(
    plan: unknown,
    fake: FakeOptions = {},
    operate: (handle: WorkflowHandle, harness: Harness) => Promise<void> = async () => undefined,
    /** Saved as test/fixtures/histories/NAME.json when MIGRAVI_RECORD_HISTORIES is set (test/unit/replay.test.ts replays them). */
    fixture?: string,
    workflowType = 'migrateInfrastructure',
  ): Promise<{ result?: MigrationReport; error?: Error; calls: string[] }> {
    const calls: string[] = [];
    const runs: Array<Promise<void>> = [];
    const cloudWorkers = new Map<string, Worker>();
    const startCloud = async (cloud: string) => {
      const worker = await Worker.create({ connection: env.nativeConnection, taskQueue: cloudTaskQueue(cloud), activities: fakeCloud(cloud, calls, fake) });
      cloudWorkers.set(cloud, worker);
      runs.push(worker.run());
    };
    const orchestrator = await Worker.create({ connection: env.nativeConnection, taskQueue: ORCHESTRATOR_TASK_QUEUE, workflowBundle: bundle });
    runs.push(orchestrator.run());
    await Promise.all(['cloud-a', 'cloud-b'].map(startCloud));
    const harness: Harness = {
      calls,
      async stopCloud(cloud) {
        const worker = cloudWorkers.get(cloud)!;
        cloudWorkers.delete(cloud);
        worker.shutdown();
        await waitFor(`the ${cloud} worker to stop`, () => worker.getState() === 'STOPPED', 20_000);
      },
      startCloud: (cloud) => void startCloud(cloud),
    };
    const handle = await env.client.workflow.start(workflowType, {
      taskQueue: ORCHESTRATOR_TASK_QUEUE,
      workflowId: `test-${Math.random().toString(36).slice(2)}`,
      args: [plan],
    });
    let outcome: { result?: MigrationReport; error?: Error } = {};
    try {
      // The operator's part runs to its end even when the workflow fails first (it may wait for what follows the failure).
      const [result, operated] = await Promise.allSettled([handle.result() as Promise<MigrationReport>, operate(handle, harness)]);
      if (operated.status === 'rejected') outcome = { error: operated.reason as Error };
      else outcome = result.status === 'fulfilled' ? { result: result.value } : { error: result.reason as Error };
    } finally {
      orchestrator.shutdown();
      for (const worker of cloudWorkers.values()) worker.shutdown();
      await Promise.all(runs);
    }
    if (fixture && process.env.MIGRAVI_RECORD_HISTORIES) await saveHistory(fixture, handle);
    return { ...outcome, calls };
  }

  const plan = { name: 'unit', source: 'cloud-a', destination: 'cloud-b', containers: ['kv'] };
  const digestMismatch = (badFiles: string[]) =>
    ApplicationFailure.create({ message: 'checkpoint arrived corrupt', type: 'DigestMismatch', nonRetryable: true, details: [{ kind: 'checkpoint', badFiles, problems: badFiles.map((f) => `${f}: bad`) } satisfies DigestMismatchDetails] });

  it('runs the phases in order, each on the right cloud, and reports what the activities measured', async () => {
    const { result, calls, error } = await migrate(plan, {}, undefined, 'happy-path');
    assert.equal(error, undefined);
    // The prediction's two measurements run at once, in either order.
    assert.deepEqual(calls.filter((c) => /:(measureForPrediction|restoreRates)$/.test(c)).sort(), ['cloud-a:measureForPrediction', 'cloud-b:restoreRates']);
    // The network's two sides are set up at once: the destination replicates, then stretches; the source stretches.
    const network = calls.filter((c) => /:(replicateNetworks|stretchNetworks)$/.test(c));
    assert.deepEqual([...network].sort(), ['cloud-a:stretchNetworks', 'cloud-b:replicateNetworks', 'cloud-b:stretchNetworks']);
    assert.ok(network.indexOf('cloud-b:replicateNetworks') < network.indexOf('cloud-b:stretchNetworks'), `network calls: ${network.join(', ')}`);
    const networkSpan = network.map((c) => calls.indexOf(c));
    assert.ok(Math.min(...networkSpan) > calls.indexOf('cloud-a:claimContainers') && Math.max(...networkSpan) < calls.indexOf('cloud-b:prepareDestination'), `calls: ${calls.join(', ')}`);
    assert.deepEqual(calls.filter((c) => !/:(preflight|measureForPrediction|restoreRates|replicateNetworks|stretchNetworks)$/.test(c)).slice(0, -4), [
      'cloud-a:inventory',
      'cloud-a:claimContainers',
      'cloud-b:prepareDestination',
      'cloud-a:sendRootfs',
      'cloud-b:receiveRootfs',
      'cloud-a:checkpoint',
      'cloud-a:sendCheckpoint',
      'cloud-b:restore',
      'cloud-b:disarmFence',
    ]);
    // Release runs on both sides at once, in either order; then the VI has left the source and
    // the networks it released there are unstretched at the destination.
    assert.deepEqual(calls.slice(-4, -2).sort(), ['cloud-a:releaseSource', 'cloud-b:cleanupReceived']);
    assert.deepEqual(calls.slice(-2), ['cloud-a:releaseNetworks', 'cloud-b:unstretchNetworks']);
    assert.ok(result);
    // Bytes on the link, attempts included: 1000 (rootfs) + 7000 (image, resent part included) + the 8 MiB link probe.
    assert.equal(result.bytesMoved, 8000 + (8 << 20));
    // Predicted from 1 MiB of memory and ~840 Mbit/s with default host rates (lib/prediction.ts).
    assert.equal(result.groups[0]?.predicted?.linkMbit, 839);
    assert.match(result.events.join('\n'), /blackout predicted 0\.\d\d s .*default dump rate/);
    assert.deepEqual(result.phases.map((p) => p.phase), ['inventory', 'preflight', 'network', 'prepare', 'pre-copy', 'predict', 'checkpoint', 'transfer', 'restore', 'release', 'release-networks']);
    const sum = result.phases.reduce((s, p) => s + p.durationMs, 0);
    assert.ok(sum <= result.wallMs, `phases sum ${sum} ms > wall ${result.wallMs} ms`);
    // The checks are the destination's own results, not restated from what was sent.
    assert.deepEqual(result.containers[0]?.checks.map((c) => [c.kind, c.verifiedBytes, c.recomputedSha256]), [
      ['rootfs', 1000, 'cd'.repeat(32)],
      ['checkpoint', 5000, 'cd'.repeat(32)],
    ]);
    assert.deepEqual(result.warnings, []);
  });

  it('stops before the freeze when the predicted blackout exceeds the plan\'s budget, saying why', async () => {
    const { error, calls } = await migrate(
      { ...plan, options: { blackoutBudgetSeconds: 5 } },
      // 2 GiB of memory over a link probed at ~84 Mbit/s: minutes, not 5 s.
      { overrides: { 'cloud-a:measureForPrediction': async () => ({ memberBytes: [2 * 2 ** 30], dumps: [], link: { bytes: 8 << 20, ms: 800 } }) } },
    );
    assert.ok(error instanceof WorkflowFailedError);
    assert.match(String(error.cause?.message), /blackout of kv is predicted at \d+\.\d s, over the plan's blackoutBudgetSeconds \(5 s\): stopping before the freeze \(image ~2048 MiB, link 84 Mbit\/s/);
    assert.match(String(error.cause?.message), /rolled back: the VI runs at the source/);
    assert.ok(!calls.includes('cloud-a:checkpoint'), 'froze despite the prediction');
    assert.ok(calls.includes('cloud-b:discardPrepared'), 'left the prepared destination behind');
  });

  it('undoes the source\'s stretch, set up at the same time, when the destination cannot replicate the network', async () => {
    const { error, calls } = await migrate(plan, { failAt: 'cloud-b:replicateNetworks' });
    assert.ok(error instanceof WorkflowFailedError);
    assert.match(String(error.cause?.message), /injected failure in replicateNetworks[\s\S]*rolled back: the VI runs at the source/);
    assert.ok(calls.indexOf('cloud-a:stretchNetworks') >= 0, `the source's side did not run: ${calls.join(', ')}`);
    assert.deepEqual(calls.slice(Math.max(calls.indexOf('cloud-a:stretchNetworks'), calls.indexOf('cloud-b:replicateNetworks')) + 1), ['cloud-a:unstretchNetworks', 'cloud-a:releaseClaims']);
  });

  it('rolls back in reverse order when the restore fails, fencing the destination before resuming the source', async () => {
    const { error, calls } = await migrate(plan, { failAt: 'cloud-b:restore' }, undefined, 'rollback-restore-failed');
    assert.ok(error instanceof WorkflowFailedError);
    assert.match(String(error.cause?.message), /restore failed: injected failure in restore[\s\S]*rolled back: the VI runs at the source/);
    const afterFailure = calls.slice(calls.indexOf('cloud-b:restore') + 1);
    assert.deepEqual(afterFailure, [
      'cloud-b:discardContainer',
      'cloud-a:resumeAtSource',
      'cloud-b:discardPrepared',
      'cloud-a:unstretchNetworks',
      'cloud-b:unstretchNetworks',
      'cloud-b:removeNetworks',
      'cloud-a:releaseClaims',
    ]);
  });

  it('keeps the source frozen until the copy\'s lease has ended when the destination cannot discard it', async () => {
    const at: Record<string, number> = {};
    const { error, calls } = await migrate(plan, {
      failAt: 'cloud-b:restore',
      overrides: {
        'cloud-b:discardContainer': async () => { at.discard ??= Date.now(); throw ApplicationFailure.nonRetryable('cloud-b refuses', 'Injected'); },
        'cloud-a:resumeAtSource': async () => { at.resumed = Date.now(); return 'restored-from-image'; },
      },
    });
    assert.ok(error instanceof WorkflowFailedError);
    // Resumed once the lease had ended; the refused discard, tried again after the resume, is reported.
    assert.match(String(error.cause?.message), /rolled back, but some cleanup failed: the VI runs at the source\n- discard kv at cloud-b: discardContainer failed: cloud-b refuses[\s\S]*discard kv at cloud-b: proven by the end of its lease/);
    assert.ok(calls.indexOf('cloud-a:resumeAtSource') > calls.indexOf('cloud-b:discardContainer'));
    // The lease (15 s from the restore's start) ran out before the resume; the discard was tried again after it.
    assert.ok(at.resumed! - at.discard! >= 13_000, `resumed ${at.resumed! - at.discard!} ms after the refused discard`);
    assert.ok(calls.slice(calls.indexOf('cloud-a:resumeAtSource')).includes('cloud-b:discardContainer'));
  });

  it('never resumes the source while the destination copy is not proven gone (a commit that may have happened): it stays frozen with its image, says so, and waits for proof', async () => {
    let resumedWhileFrozen = true;
    // The restore went through; the commit (its lease stopped) failed after it began: the copy may live for good.
    const { error, calls } = await migrate(plan, { failAt: 'cloud-b:disarmFence', overrides: { 'cloud-b:discardContainer': async () => { throw ApplicationFailure.nonRetryable('cloud-b refuses', 'Injected'); } } }, async (handle, harness) => {
      const frozen = await waitForState(handle, 'frozen-at-source');
      assert.match(String(frozen.error), /kv stays frozen at cloud-a with its complete checkpoint image: its copy at cloud-b could not be proven gone/);
      resumedWhileFrozen = harness.calls.includes('cloud-a:resumeAtSource');
      await confirmDestinationGone(handle); // the operator checked cloud-b by hand
    });
    assert.equal(resumedWhileFrozen, false, 'the source was resumed while a destination copy may be alive');
    assert.ok(error instanceof WorkflowFailedError);
    assert.match(String(error.cause?.message), /rolled back: the VI runs at the source[\s\S]*until the operator confirmed its copy at cloud-b was gone/);
    // The resume came only after the operator's word.
    assert.ok(calls.indexOf('cloud-a:resumeAtSource') > calls.indexOf('cloud-b:discardContainer'));
  });

  it('treats a cancel like an abort: a clean rollback that resumes a frozen container, in a scope the cancel cannot stop', async () => {
    let transferStarted = false;
    const { error, calls } = await migrate(plan, {
      overrides: {
        // A long transfer, interrupted by the cancel (it ends when the cancel reaches it).
        'cloud-a:sendCheckpoint': async () => {
          transferStarted = true;
          const { Context } = await import('@temporalio/activity');
          const ctx = Context.current();
          const beat = setInterval(() => ctx.heartbeat(), 200);
          try {
            await ctx.cancelled;
          } finally {
            clearInterval(beat);
          }
          throw new Error('unreachable');
        },
      },
    }, async (handle) => {
      await waitFor('the transfer to start', () => transferStarted, 20_000);
      await handle.cancel();
    });
    assert.ok(error instanceof WorkflowFailedError);
    assert.match(String(error.cause?.message), /the migration was cancelled[\s\S]*rolled back: the VI runs at the source/);
    const afterCancel = calls.slice(calls.indexOf('cloud-a:sendCheckpoint') + 1);
    // No restore ever started: the discard at the destination is mere cleanup, after the resume.
    assert.deepEqual(afterCancel, ['cloud-a:resumeAtSource', 'cloud-b:discardPrepared', 'cloud-a:unstretchNetworks', 'cloud-b:unstretchNetworks', 'cloud-b:removeNetworks', 'cloud-a:releaseClaims']);
  });

  it('gives up after the blackout budget when no destination worker takes the restore, and resumes the source at once', async () => {
    let destinationDead = false;
    const holdTransfer: Override = async () => {
      await waitFor('the destination to be stopped', () => destinationDead, 20_000);
      return { kind: 'checkpoint', remotePath: '/in/checkpoint', bytes: 5000, wireBytes: 5000, resumedBytes: 0, sha256: 'ab'.repeat(32), files: imageFiles, durationMs: 5 };
    };
    const { error, calls } = await migrate({ ...plan, options: { blackoutBudgetSeconds: 8, rollbackTimeoutSeconds: 60 } }, { overrides: { 'cloud-a:sendCheckpoint': holdTransfer } }, async (_handle, harness) => {
      await waitFor('the checkpoint', () => harness.calls.includes('cloud-a:sendCheckpoint'), 20_000);
      await harness.stopCloud('cloud-b'); // the destination dies after the checkpoint
      destinationDead = true;
      await waitFor('the source to be resumed', () => harness.calls.includes('cloud-a:resumeAtSource'), 30_000);
      harness.startCloud('cloud-b'); // it comes back: the cleanup there can finish
    });
    assert.ok(error instanceof WorkflowFailedError);
    assert.match(String(error.cause?.message), /restore timed out \(SCHEDULE_TO_START\)[\s\S]*rolled back: the VI runs at the source/);
    assert.ok(!calls.includes('cloud-b:restore'), 'a restore ran');
    // Temporal proved no restore started: the source resumed without waiting for the dead destination.
    const resumeAt = calls.indexOf('cloud-a:resumeAtSource');
    assert.ok(!calls.slice(0, resumeAt).includes('cloud-b:discardContainer'));
    assert.ok(calls.slice(resumeAt).includes('cloud-b:discardContainer'), 'the destination was not cleaned once back');
  });

  it('sends again only the files that arrived corrupt, and restores from the good copy', async () => {
    const sends: unknown[] = [];
    const { result, error, calls } = await migrate(plan, {
      overrides: {
        'cloud-b:restore': async (_input, nth) => {
          if (nth === 1) throw digestMismatch(['pages-1.img']);
          return { durationMs: 9, check: { kind: 'checkpoint', files: 2, verifiedBytes: 5000, recomputedSha256: 'cd'.repeat(32), verifyMs: 3 }, completedEarlierAttempt: false };
        },
        'cloud-a:sendCheckpoint': async (input, nth) => {
          sends.push((input as { only?: string[] }).only);
          const files = nth === 1 ? imageFiles : imageFiles.filter((f) => f.name === 'pages-1.img');
          return { kind: 'checkpoint', remotePath: '/in/checkpoint', bytes: files.reduce((s, f) => s + f.bytes, 0), wireBytes: files.reduce((s, f) => s + f.bytes, 0), resumedBytes: 0, sha256: 'ab'.repeat(32), files, durationMs: 5 };
        },
      },
    });
    assert.ok(result, String(error));
    assert.deepEqual(sends, [undefined, ['pages-1.img']]);
    assert.deepEqual(calls.filter((c) => /sendCheckpoint|restore$/.test(c)), ['cloud-a:sendCheckpoint', 'cloud-b:restore', 'cloud-a:sendCheckpoint', 'cloud-b:restore']);
    assert.equal(result.containers[0]?.resends, 1);
    assert.equal(result.bytesMoved, 1000 + 5000 + 4000 + (8 << 20)); // rootfs, image, resent pages, link probe
    assert.match(result.events.join('\n'), /checkpoint arrived corrupt.*sending pages-1\.img again/);
  });

  describe('post-copy', () => {
    const postCopyPlan = { ...plan, options: { postCopy: true } };
    const pageSource = { endpoint: { host: '203.0.113.11', port: 22, username: 'root', hostKeySha256: 'y', directory: '/img' }, port: 7601, lazyBytes: 1 << 20, eagerBytes: 4096 };
    const overrides: Record<string, Override> = {
      'cloud-b:prepareDestination': async () => ({ host: '203.0.113.12', port: 22, username: 'root', hostKeySha256: 'x', directory: '/in', streamPort: 7600 }),
      'cloud-a:checkpoint': async () => ({ imageDir: '/img', imageBytes: 5000, durationMs: 7, sentDir: '/img.eager', postCopy: pageSource, sent: { kind: 'checkpoint', remotePath: '/in/checkpoint', bytes: 5000, wireBytes: 5000, resumedBytes: 0, sha256: 'ab'.repeat(32), durationMs: 5, files: imageFiles } }),
    };

    it('commits only after the memory arrived; a lost page source is started again at the source and the window goes on', async () => {
      const { result, calls, error } = await migrate(postCopyPlan, {
        overrides: {
          ...overrides,
          'cloud-b:awaitPostCopy': async (_input, nth) => {
            if (nth === 1) throw ApplicationFailure.create({ message: 'no page server on 203.0.113.11', type: 'PageSourceLost', nonRetryable: true });
            return { windowMs: 900, lazyBytes: 1 << 20, rescuedPages: 12, droppedPages: 0, recoveries: ['CRIU\'s lazy-pages daemon was lost'] };
          },
        },
      }, undefined, 'post-copy');
      assert.equal(error, undefined);
      const order = calls.filter((c) => /:(restore|awaitPostCopy|servePages|releaseSource)$/.test(c));
      assert.deepEqual(order, ['cloud-b:restore', 'cloud-b:awaitPostCopy', 'cloud-a:servePages', 'cloud-b:awaitPostCopy', 'cloud-a:releaseSource']);
      assert.ok(!calls.includes('cloud-a:sendCheckpoint'), 'the image was sent by the checkpoint (its eager part)');
      assert.deepEqual(result!.phases.map((p) => p.phase).filter((p) => ['restore', 'post-copy', 'release'].includes(p)), ['restore', 'post-copy', 'release']);
      assert.equal(result!.containers[0]!.postCopy?.rescuedPages, 12);
      assert.match(result!.events.join('\n'), /starting its page server at cloud-a again/);
      // The rootfs (1000), the eager image (5000), the link probe and the lazy memory that followed.
      assert.equal(result!.bytesMoved, 1000 + 5000 + (8 << 20) + (1 << 20));
    });

    it('rolls the group back when the window fails, saying what it did at the destination is lost', async () => {
      const { error, calls } = await migrate(postCopyPlan, {
        overrides: { ...overrides, 'cloud-b:awaitPostCopy': async () => Promise.reject(ApplicationFailure.nonRetryable('kv stopped at cloud-b before all of its memory had arrived', 'PostCopyFailed')) },
      });
      assert.ok(error instanceof WorkflowFailedError);
      const message = String(error.cause?.message);
      assert.match(message, /kv stopped at cloud-b before all of its memory had arrived/);
      assert.match(message, /kv ran at cloud-b for \d+ ms after its restore: a rollback now loses what it did there/);
      assert.match(message, /rolled back: the VI runs at the source/);
      const fence = calls.indexOf('cloud-b:discardContainer');
      assert.ok(fence > 0 && fence < calls.indexOf('cloud-a:resumeAtSource'), 'the destination is discarded before the source resumes');
      assert.ok(!calls.includes('cloud-a:releaseSource'));
    });

    it('refuses post-copy before any freeze where the destination offers no image stream', async () => {
      const { error, calls } = await migrate(postCopyPlan);
      assert.match(String((error as WorkflowFailedError).cause?.message), /postCopy needs the destination's image stream/);
      assert.ok(!calls.includes('cloud-a:checkpoint'));
    });
  });

  it('does not undo a committed container when releasing the source fails', async () => {
    const { result, error, calls } = await migrate({ ...plan, options: { rollbackTimeoutSeconds: 10 } }, { failAt: 'cloud-a:releaseSource' });
    assert.equal(error, undefined);
    assert.ok(result);
    assert.equal(result.warnings.length, 1);
    assert.match(result.warnings[0]!, /could not release kv at cloud-a/);
    assert.ok(!calls.includes('cloud-a:resumeAtSource'));
    assert.ok(!calls.includes('cloud-b:discardContainer'));
  });

  it('fails a bad plan before any activity runs', async () => {
    const { error, calls } = await migrate({ name: 'unit', source: 'cloud-a', destination: 'cloud-a', containers: [] });
    assert.ok(error instanceof WorkflowFailedError);
    assert.match(String(error.cause?.message), /invalid migration plan[\s\S]*no container[\s\S]*must differ/);
    assert.deepEqual(calls, []);
  });

  it('changes nothing when a pre-flight check fails', async () => {
    const { error, calls } = await migrate(plan, { failAt: 'cloud-b:preflight' });
    assert.ok(error instanceof WorkflowFailedError);
    // Only the claims are released: this migration never took any.
    assert.deepEqual(calls.filter((c) => !['cloud-a:inventory', 'cloud-a:preflight', 'cloud-b:preflight'].includes(c)), ['cloud-a:releaseClaims']);
  });

  it('waits for the operator before freezing, then goes on when approved', async () => {
    const { result, error, calls } = await migrate({ ...plan, options: { approveCutover: true } }, {}, async (handle, harness) => {
      const waiting = await waitForState(handle, 'awaiting-approval');
      assert.equal(waiting.phase, 'awaiting approval');
      assert.ok(!harness.calls.includes('cloud-a:checkpoint'), 'froze before approval');
      assert.ok(harness.calls.includes('cloud-b:receiveRootfs'), 'the rootfs is not pre-copied before the wait');
      await approveCutover(handle);
    });
    assert.ok(result, String(error));
    assert.ok(calls.includes('cloud-a:checkpoint') && calls.includes('cloud-b:restore'));
  });

  it('answers approve and abort as updates: taken while they can be honoured, refused with the reason otherwise', async () => {
    const answers: string[] = [];
    const refusal = (err: unknown) => (err instanceof RequestRefusedError ? `refused: ${err.message.replace(/^\S+ /, '')}` : `error: ${String(err)}`);
    const { result, error } = await migrate({ ...plan, options: { approveCutover: true } }, {}, async (handle) => {
      await waitForState(handle, 'awaiting-approval');
      const taken = await approveCutover(handle);
      answers.push(`approve: ${taken.accepted} in ${taken.state}`);
      answers.push(await approveCutover(handle).then(() => 'approved twice', refusal));
      await handle.result();
      answers.push(await abortMigration(handle, 'too late').then(() => 'aborted a completed migration', refusal));
    });
    assert.ok(result, String(error));
    assert.deepEqual(answers, ['approve: true in awaiting-approval', 'refused: refused approve: the cut-over is approved already', 'refused: refused abort: the migration has completed already']);
    let refused = '';
    await migrate(plan, {}, async (handle) => {
      refused = await approveCutover(handle).then(() => 'approved', refusal);
    });
    assert.equal(refused, 'refused: refused approve: this migration does not wait for approval (its plan has options.approveCutover off)');
  });

  it('keeps its search attributes current, so the Web UI\'s list finds it by VI, clouds and state', async () => {
    let attributes: Record<string, unknown> = {};
    let listed: string[] = [];
    const { result, error } = await migrate(plan, {}, async (handle) => {
      await handle.result();
      const described = await handle.describe();
      attributes = Object.fromEntries(Object.entries(SEARCH_ATTRIBUTES).map(([field, key]) => [field, described.typedSearchAttributes.get(key)]));
      const query = `MigraviVi = "unit" AND MigraviDestination = "cloud-b" AND MigraviState = "completed" AND WorkflowId = "${handle.workflowId}"`;
      await waitFor('the list to find the migration by its search attributes', async () => {
        listed = [];
        for await (const w of env.client.workflow.list({ query })) listed.push(w.workflowId);
        return listed.length > 0;
      }, 20_000, 200);
    });
    assert.ok(result, String(error));
    assert.deepEqual(attributes, { vi: 'unit', source: 'cloud-a', destination: 'cloud-b', phase: 'done', state: 'completed' });
    assert.equal(listed.length, 1);
    const failed = await migrate(plan, { failAt: 'cloud-b:restore' }, async (handle) => {
      await handle.result().catch(() => undefined);
      const described = await handle.describe();
      attributes = { state: described.typedSearchAttributes.get(SEARCH_ATTRIBUTES.state) };
    });
    assert.ok(failed.error);
    assert.deepEqual(attributes, { state: 'failed' });
  });

  it('rolls back without freezing anything when aborted while awaiting approval, bundle and files included', async () => {
    const { error, calls } = await migrate({ ...plan, options: { approveCutover: true } }, {}, async (handle) => {
      await waitForState(handle, 'awaiting-approval');
      await abortMigration(handle, 'maintenance window closed');
    });
    assert.ok(error instanceof WorkflowFailedError);
    assert.match(String(error.cause?.message), /maintenance window closed[\s\S]*rolled back/);
    assert.ok(!calls.includes('cloud-a:checkpoint'));
    assert.ok(!calls.includes('cloud-a:resumeAtSource'), 'nothing was frozen, nothing to resume');
    assert.deepEqual(calls.slice(-5), ['cloud-b:discardPrepared', 'cloud-a:unstretchNetworks', 'cloud-b:unstretchNetworks', 'cloud-b:removeNetworks', 'cloud-a:releaseClaims']);
  });

  it('copies a writable rootfs only after the freeze, so no write is lost', async () => {
    const writable: Inventory = { ...readonlyInventory, containers: [{ ...kv, readonlyRootfs: false }] };
    const { result, calls } = await migrate(plan, { inventory: writable });
    assert.ok(result);
    const order = calls.filter((c) => /:(checkpoint|sendCheckpoint|sendRootfs|receiveRootfs|restore)$/.test(c));
    assert.deepEqual(order, ['cloud-a:checkpoint', 'cloud-a:sendCheckpoint', 'cloud-a:sendRootfs', 'cloud-b:receiveRootfs', 'cloud-b:restore']);
    assert.ok(!result.phases.some((p) => p.phase === 'pre-copy'));
    assert.deepEqual(result.containers[0]?.artifacts.map((a) => a.kind), ['rootfs', 'checkpoint']);
  });

  it('freezes a group together, restores it together, and rolls the whole group back when one member fails', async () => {
    const db: ContainerSpec = { ...kv, name: 'db', interfaces: [{ network: 'net', ip: '192.0.2.11', mac: '02:00:00:00:00:0b' }] };
    const two: Inventory = { ...readonlyInventory, containers: [kv, db] };
    const stepOf = (input: unknown) => (input as { container: ContainerSpec }).container.name;
    const order: string[] = [];
    const record = (what: string, result: unknown): Override => async (input) => {
      order.push(`${what}:${stepOf(input)}`);
      return result;
    };
    const together = await migrate({ ...plan, containers: ['kv', 'db'] }, {
      inventory: two,
      overrides: {
        'cloud-a:checkpoint': record('checkpoint', { imageDir: '/img', imageBytes: 5000, durationMs: 7 }),
        'cloud-b:restore': record('restore', { durationMs: 9, check: { kind: 'checkpoint', files: 2, verifiedBytes: 5000, recomputedSha256: 'cd'.repeat(32), verifyMs: 3 }, completedEarlierAttempt: false }),
      },
    });
    assert.ok(together.result, String(together.error));
    // Both frozen before either is restored: one blackout for the group.
    assert.deepEqual(order.slice(0, 2).map((o) => o.split(':')[0]), ['checkpoint', 'checkpoint']);
    assert.deepEqual(order.slice(2).map((o) => o.split(':')[0]), ['restore', 'restore']);
    assert.deepEqual(together.result.groups.map((g) => g.containers), [['kv', 'db']]);
    const group = together.result.groups[0]!;
    for (const c of together.result.containers) assert.ok(c.frozenMs <= group.frozenMs, `${c.name} frozen ${c.frozenMs} ms > group ${group.frozenMs} ms`);

    const { error, calls } = await migrate({ ...plan, containers: ['kv', 'db'] }, {
      inventory: two,
      overrides: { 'cloud-b:restore': async (input) => {
        if (stepOf(input) === 'db') throw ApplicationFailure.nonRetryable('db cannot start here', 'Injected');
        return { durationMs: 9, check: { kind: 'checkpoint', files: 2, verifiedBytes: 5000, recomputedSha256: 'cd'.repeat(32), verifyMs: 3 }, completedEarlierAttempt: false };
      } },
    });
    assert.ok(error instanceof WorkflowFailedError);
    assert.match(String(error.cause?.message), /db cannot start here[\s\S]*rolled back: the VI runs at the source/);
    const afterFailure = calls.slice(calls.lastIndexOf('cloud-b:restore') + 1);
    // Both members fenced and resumed, kv although it was restored: the group commits whole or not at all.
    assert.deepEqual(afterFailure.filter((c) => c === 'cloud-b:discardContainer').length, 2);
    assert.deepEqual(afterFailure.filter((c) => c === 'cloud-a:resumeAtSource').length, 2);
    assert.ok(afterFailure.lastIndexOf('cloud-b:discardContainer') < afterFailure.indexOf('cloud-a:resumeAtSource'), `a source resumed before both copies were fenced: ${afterFailure.join(' ')}`);
  });

  it('moves the VI that inventory finds when the plan names it, and refuses groups that do not fit it before changing anything', async () => {
    const db: ContainerSpec = { ...kv, name: 'db', interfaces: [{ network: 'net', ip: '192.0.2.11', mac: '02:00:00:00:00:0b' }] };
    const two: Inventory = { ...readonlyInventory, containers: [kv, db] };
    const inventoried: unknown[] = [];
    const whole = await migrate({ name: 'unit', vi: 'shop', source: 'cloud-a', destination: 'cloud-b' }, {
      inventory: two,
      overrides: { 'cloud-a:inventory': async (input) => (inventoried.push(input), two) },
    });
    assert.ok(whole.result, String(whole.error));
    assert.deepEqual(inventoried, [{ vi: 'shop' }]);
    assert.deepEqual(whole.result.groups.map((g) => g.containers), [['kv', 'db']]);

    const { error, calls } = await migrate({ name: 'unit', vi: 'shop', source: 'cloud-a', destination: 'cloud-b', groups: [['kv']] }, { inventory: two });
    assert.ok(error instanceof WorkflowFailedError);
    assert.match(String(error.cause?.message), /groups: no group moves db[\s\S]*VI shop has kv, db/);
    assert.deepEqual(calls, ['cloud-a:inventory', 'cloud-a:releaseClaims']);
  });

  it('moves part of a VI and keeps its networks stretched for the rest', async () => {
    const db: ContainerSpec = { ...kv, name: 'db', vi: 'shop', interfaces: [{ network: 'net', ip: '192.0.2.11', mac: '02:00:00:00:00:0b' }] };
    const two: Inventory = { ...readonlyInventory, containers: [{ ...kv, vi: 'shop' }, db] };
    const { result, error, calls } = await migrate(
      { name: 'unit', vi: 'shop', source: 'cloud-a', destination: 'cloud-b', containers: ['kv'] },
      // Inventory finds the plan's container; the source still uses the network for db, so it releases none.
      { inventory: { ...two, containers: [two.containers[0]!] }, overrides: { 'cloud-a:releaseNetworks': async () => [] } },
      undefined,
      'split-vi',
    );
    assert.ok(result, String(error));
    assert.deepEqual(result.containers.map((c) => c.name), ['kv']);
    assert.equal(calls.at(-1), 'cloud-a:releaseNetworks', 'the destination unstretched a network the rest of the VI uses');
  });

  it('keeps a committed group at the destination when a later group fails, and says so', async () => {
    const db: ContainerSpec = { ...kv, name: 'db', interfaces: [{ network: 'net', ip: '192.0.2.11', mac: '02:00:00:00:00:0b' }] };
    const two: Inventory = { ...readonlyInventory, containers: [kv, db] };
    const { error, calls } = await migrate({ ...plan, containers: ['kv', 'db'], groups: [['kv'], ['db']] }, { failAt: 'cloud-b:restore#2', inventory: two });
    assert.ok(error instanceof WorkflowFailedError);
    assert.match(String(error.cause?.message), /rolled back: kv stays at cloud-b \(committed\); the rest runs at the source/);
    const afterFailure = calls.slice(calls.lastIndexOf('cloud-b:restore') + 1);
    // Only db's steps are undone; the network stays stretched for kv.
    assert.deepEqual(afterFailure, ['cloud-b:discardContainer', 'cloud-a:resumeAtSource', 'cloud-b:discardPrepared', 'cloud-a:releaseClaims']);
  });

  it('says in its progress query where each container is, and what its copies put on the link: moved, rolled back, still waiting', async () => {
    const db: ContainerSpec = { ...kv, name: 'db', interfaces: [{ network: 'net', ip: '192.0.2.11', mac: '02:00:00:00:00:0b' }] };
    const web: ContainerSpec = { ...kv, name: 'web', interfaces: [{ network: 'net', ip: '192.0.2.12', mac: '02:00:00:00:00:0c' }] };
    const three: Inventory = { ...readonlyInventory, containers: [kv, db, web] };
    let progress: MigrationProgress | undefined;
    const { error } = await migrate({ ...plan, containers: ['kv', 'db', 'web'], groups: [['kv'], ['db'], ['web']] }, { failAt: 'cloud-b:restore#2', inventory: three }, async (handle) => {
      await handle.result().catch(() => undefined);
      progress = await handle.query<MigrationProgress>('progress');
    });
    assert.ok(error instanceof WorkflowFailedError);
    assert.deepEqual(progress?.containers?.map((c) => [c.name, c.state]), [['kv', 'moved'], ['db', 'rolled back'], ['web', 'waiting']]);
    // The fakes' receipts: a 1000-byte rootfs, and an image whose transfer wrote 7000 bytes; the link probe is nobody's.
    assert.deepEqual(progress?.containers?.map((c) => c.bytesMoved), [8000, 8000, 0]);
    assert.equal(progress?.containers?.find((c) => c.name === 'kv')?.phase, 'release');
    assert.equal(progress?.containers?.find((c) => c.name === 'db')?.phase, 'restore');
  });

  it('evacuates a cloud as one child migration per VI, one at a time: a VI that fails is rolled back and reported, the others move, one not hosted is skipped', async () => {
    const listing = { cloud: 'cloud-a', networks: [], containers: [{ name: 'kv', vi: 'unit', addresses: [], status: 'running' }, { name: 'db', vi: 'shop', addresses: [], status: 'running' }] };
    // The children run one after the other (concurrency 1), in the order named: shop's restore is the second.
    const { result, error, calls } = await migrate(
      { source: 'cloud-a', destination: 'cloud-b', vis: ['unit', 'shop', 'ghost'], concurrency: 1 },
      { failAt: 'cloud-b:restore#2', overrides: { 'cloud-a:describeCloud': async () => listing } },
      undefined,
      'evacuation',
      'evacuateCloud',
    );
    assert.ok(result, String(error));
    const report = result as unknown as EvacuationReport;
    assert.deepEqual(report.moved.map((m) => m.vi), ['unit']);
    assert.deepEqual(report.rolledBack.map((m) => m.vi), ['shop']);
    assert.match(report.rolledBack[0]!.reason, /rolled back/);
    assert.deepEqual(report.skipped.map((m) => m.vi), ['ghost']);
    assert.match(report.rolledBack[0]!.workflowId, /-shop$/);
    assert.equal(calls.filter((c) => c === 'cloud-a:inventory').length, 2, 'not one migration per VI');
  });

  describe('the blackout budget\'s promise for a public VI (a floating IP, a DNS name, a volume, a writable rootfs)', () => {
    const publicKv: ContainerSpec = {
      ...kv,
      readonlyRootfs: false,
      floatingIp: { network: 'net', address: '203.0.113.40' },
      publicNames: [{ name: 'kv.vi.example.', zone: 'vi.example.', ttl: 5, dnsCloud: 'cloud-a' }],
      volumes: [{ source: '/vol/kv', target: '/data', readOnly: false }],
    };
    const publicInventory: Inventory = { ...readonlyInventory, containers: [publicKv] };
    const restoredWithAddress: Override = async () => ({ durationMs: 9, check: { kind: 'checkpoint', files: 2, verifiedBytes: 5000, recomputedSha256: 'cd'.repeat(32), verifyMs: 3 }, completedEarlierAttempt: false, floatingIp: '203.0.113.50' });
    const publicFake = (extra: FakeOptions = {}): FakeOptions => ({ inventory: publicInventory, ...extra, overrides: { 'cloud-b:restore': restoredWithAddress, ...extra.overrides } });
    // The fake edge reports one outside connection for good: the drain after a commit ends at its timeout.
    const publicPlan = { ...plan, options: { drainTimeoutSeconds: 1 } };
    const undoKeys = new Set<string>(UNDO_ACTIVITIES.flatMap((a) => [`cloud-a:${a}`, `cloud-b:${a}`]));

    it('walks every compensation the workflow records: only fences (and the source\'s DNS undo) come before a resume', async function () {
      this.timeout(300_000);
      const happy = await migrate(publicPlan, publicFake());
      assert.ok(happy.result, String(happy.error));
      assert.ok(happy.calls.includes('cloud-a:setDnsRecords') && happy.calls.includes('cloud-b:routeReplies') && happy.calls.includes('cloud-b:receiveVolumes'), `not every public step ran: ${happy.calls.join(', ')}`);
      // Every call up to the commit point (the release comes after it) is a place to fail.
      const points = happy.calls.slice(0, happy.calls.findIndex((c) => ['cloud-a:releaseSource', 'cloud-b:cleanupReceived'].includes(c))).map((c, i, all) => `${c}#${all.slice(0, i + 1).filter((x) => x === c).length}`);
      const seen = new Map<string, UndoRole>();
      for (const failAt of points) {
        const { error, calls } = await migrate(publicPlan, publicFake({ failAt }));
        assert.ok(error instanceof WorkflowFailedError, `${failAt}: the migration did not fail`);
        assert.match(String(error.cause?.message), /rolled back: the VI runs at the source/, failAt);
        const undos = ((error.cause as ApplicationFailure).details?.[0] as { undos: Array<{ what: string; cloud: string; activity: string; stage: UndoRole }> }).undos;
        for (const u of undos) {
          assert.ok((UNDO_ACTIVITIES as readonly string[]).includes(u.activity), `${failAt}: ${u.what} undoes with ${u.activity}, not an undo the follow-up may run`);
          // Nothing of the destination may stand before the resume but the proof that its copy is gone.
          if (u.cloud === 'cloud-b') assert.ok(u.stage === 'fence' || u.stage === 'cleanup', `${failAt}: ${u.what} at the destination runs as ${u.stage}`);
          seen.set(`${u.activity} at ${u.cloud === 'cloud-a' ? 'source' : 'destination'}`, u.stage);
        }
        const [key, nth] = failAt.split('#') as [string, string];
        let met = 0;
        const failedAt = calls.findIndex((c) => c === key && ++met === Number(nth));
        const rollback = calls.slice(failedAt + 1).filter((c) => undoKeys.has(c));
        const frozen = calls.slice(0, failedAt + 1).includes('cloud-a:checkpoint');
        const resume = rollback.indexOf('cloud-a:resumeAtSource');
        assert.equal(resume >= 0, frozen, `${failAt}: ${frozen ? 'frozen but never resumed' : 'resumed though never frozen'} (${rollback.join(', ')})`);
        const fenced = undos.some((u) => u.stage === 'fence');
        for (const before of rollback.slice(0, Math.max(0, resume))) {
          assert.ok((before === 'cloud-b:discardContainer' && fenced) || before === 'cloud-a:setDnsRecords', `${failAt}: ${before} ran before the source resumed (${rollback.join(', ')})`);
        }
      }
      console.log(`      compensations walked at ${points.length} failure points: ${[...seen].map(([k, v]) => `${k} → ${v}`).join('; ')}`);
      assert.deepEqual(new Set(seen.values()), new Set(['fence', 'before-resume', 'resume', 'cleanup']), 'a stage was never walked');
    });

    // One kind of step here (the public-VI fault matrix kills the real worker at each of them).
    for (const dying of ['routeReplies']) {
      it(`resumes the source within the budget when the destination\'s worker dies in ${dying} and stays down; its clean-up waits for it`, async function () {
        this.timeout(120_000);
        const budgetS = 6;
        const at: Record<string, number> = {};
        let cleanup: { done: string[]; failed: unknown[] } | undefined;
        // The final volume round is the second (the first ran before the freeze); the clean-up's own call to stop routing succeeds.
        const dieHere: Override = async (_input, nth) => {
          if (dying === 'receiveVolumes' && nth === 1) return [{ kind: 'volume', files: 1, verifiedBytes: 200, recomputedSha256: 'cd'.repeat(32), verifyMs: 3 }];
          if (at.died !== undefined) return undefined;
          at.died = Date.now();
          const { Context } = await import('@temporalio/activity');
          await Context.current().cancelled; // until its worker goes away
          throw new Error('unreachable');
        };
        const stamped = (name: string, result: unknown): Override => async () => {
          at[name] ??= Date.now();
          return result;
        };
        const { error, calls } = await migrate(
          { ...publicPlan, options: { ...publicPlan.options, blackoutBudgetSeconds: budgetS } },
          publicFake({ overrides: { [`cloud-b:${dying}`]: dieHere, 'cloud-a:checkpoint': stamped('frozen', { imageDir: '/img', imageBytes: 5000, durationMs: 7 }), 'cloud-a:resumeAtSource': stamped('resumed', 'restored-from-image') } }),
          async (handle, harness) => {
            await waitFor(`the destination's worker to reach ${dying}`, () => at.died !== undefined, 30_000);
            await harness.stopCloud('cloud-b');
            await waitFor('the source to resume', () => at.resumed !== undefined, 60_000);
            const cleanupId = `${handle.workflowId}-cleanup`;
            await waitFor('the clean-up to be handed off', async () => !!(await env.client.workflow.getHandle(cleanupId).describe().catch(() => undefined)), 60_000);
            harness.startCloud('cloud-b'); // it comes back: the clean-up there runs
            cleanup = await env.client.workflow.getHandle(cleanupId).result();
            if (process.env.MIGRAVI_RECORD_HISTORIES && dying === 'routeReplies') await saveHistory('clean-up-after-rollback', env.client.workflow.getHandle(cleanupId));
          },
          dying === 'routeReplies' ? 'rollback-dead-destination' : undefined,
        );
        assert.ok(error instanceof WorkflowFailedError, String(error));
        const message = String(error.cause?.message);
        assert.match(message, /rolled back: the VI runs at the source/);
        assert.match(message, /clean-up left for when the worker of cloud-b is back \(workflow test-\w+-cleanup\): .*remove kv's port, bundle and files at cloud-b/);
        // The budget runs from the freeze; the source resumed a few seconds after it ran out, not after the rollback's 600 s per undo.
        assert.ok(at.resumed! - at.frozen! < (budgetS + 5) * 1000, `resumed ${at.resumed! - at.frozen!} ms after the freeze with a ${budgetS} s budget`);
        const resumed = calls.indexOf('cloud-a:resumeAtSource');
        assert.deepEqual(calls.slice(calls.lastIndexOf(`cloud-b:${dying}`) + 1, resumed).filter((c) => c.startsWith('cloud-b:')), [], 'a destination undo ran before the resume');
        assert.deepEqual(cleanup?.failed, []);
        assert.ok(cleanup!.done.some((d) => /remove kv's port, bundle and files at cloud-b/.test(d)), `clean-up did: ${cleanup!.done.join('; ')}`);
        assert.ok(calls.slice(resumed).includes('cloud-b:discardPrepared'), 'the destination was not cleaned once back');
      });
    }
  });
});
