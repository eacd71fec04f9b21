/**
 * The workflow's logic against a real Temporal dev server, with the cloud activities replaced by
 * recorders: order of phases, task-queue routing, the report, and the saga's rollback.
 */
import assert from 'node:assert/strict';
import { ApplicationFailure } from '@temporalio/activity';
import { WorkflowFailedError, type WorkflowHandle } from '@temporalio/client';
import { abortMigration, approveCutover, waitForState } from '../../client/migravi-client';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { bundleWorkflowCode, DefaultLogger, Runtime, Worker, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import type { CloudActivities } from '../../activities/cloud-activities';
import { temporalCliPath } from '../../lib/paths';
import { cloudTaskQueue, ORCHESTRATOR_TASK_QUEUE } from '../../lib/plan';
import type { ArtifactKind, ContainerSpec, Inventory, MigrationReport } from '../../lib/types';

const kv: ContainerSpec = { name: 'kv', network: 'net', ip: '192.0.2.10', mac: '02:00:00:00:00:0a', args: ['/bin/kv'], readonlyRootfs: true };
const readonlyInventory: Inventory = {
  source: { cloud: 'cloud-a', publicIp: '203.0.113.11' },
  networks: [{ name: 'net', cidr: '192.0.2.0/24', vni: 7, mtu: 1450 }],
  containers: [kv],
};

/** Fake activities for one cloud: each call is logged as "cloud:activity"; `failAt` ("cloud:activity", or "…#n" for the n-th call) makes it throw. */
function fakeCloud(cloud: string, calls: string[], failAt?: string, inventory = readonlyInventory): CloudActivities {
  const receipt = (kind: ArtifactKind, bytes: number) => ({ kind, remotePath: `/in/${kind}.tar`, bytes, sha256: 'ab'.repeat(32), durationMs: 5 });
  const impl: Record<string, (input: unknown) => Promise<unknown>> = {
    inventory: async () => inventory,
    preflight: async () => ({ cloud, publicIp: cloud === 'cloud-a' ? '203.0.113.11' : '203.0.113.12' }),
    replicateNetworks: async () => ['net'],
    removeNetworks: async () => undefined,
    stretchNetworks: async () => inventory.networks,
    unstretchNetworks: async () => undefined,
    prepareReceive: async () => ({ host: '203.0.113.12', port: 22, username: 'root', hostKeySha256: 'x', directory: '/in' }),
    preparePort: async () => undefined,
    removePort: async () => undefined,
    sendRootfs: async () => receipt('rootfs', 1000),
    receiveRootfs: async () => ({ verifyMs: 1, unpackMs: 1 }),
    checkpoint: async () => ({ imageDir: '/img', imageBytes: 4000, durationMs: 7 }),
    sendCheckpoint: async () => receipt('checkpoint', 5000),
    restore: async () => ({ durationMs: 9, verifyMs: 2, verifiedBytes: 5000 }),
    discardContainer: async () => undefined,
    restoreAtSource: async () => undefined,
    releaseSource: async () => undefined,
    cleanupReceived: async () => undefined,
    claimContainers: async () => undefined,
    releaseClaims: async () => undefined,
  };
  return Object.fromEntries(
    Object.entries(impl).map(([name, fn]) => [
      name,
      async (input: unknown) => {
        calls.push(`${cloud}:${name}`);
        const nth = calls.filter((c) => c === `${cloud}:${name}`).length;
        if (failAt === `${cloud}:${name}` || failAt === `${cloud}:${name}#${nth}`) throw ApplicationFailure.nonRetryable(`injected failure in ${name}`, 'Injected');
        return fn(input);
      },
    ]),
  ) as unknown as CloudActivities;
}

describe('migrateInfrastructure workflow (activities replaced)', function () {
  this.timeout(60_000);
  let env: TestWorkflowEnvironment;
  let bundle: WorkflowBundleWithSourceMap;

  before(async () => {
    // The rollback tests make the workflow log errors on purpose: keep the test output readable.
    Runtime.install({ logger: new DefaultLogger('ERROR', () => undefined) });
    env = await TestWorkflowEnvironment.createLocal({ server: { executable: { type: 'existing-path', path: temporalCliPath } } });
    bundle = await bundleWorkflowCode({ workflowsPath: require.resolve('../../workflows'), logger: { log: () => undefined, trace: () => undefined, debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined } });
  });

  after(async () => {
    await env?.teardown();
  });

  /** Runs one migration with an orchestrator and two fake cloud workers; returns the result and the calls. */
  async function migrate(
    plan: unknown,
    failAt?: string,
    operate: (handle: WorkflowHandle, calls: string[]) => Promise<void> = async () => undefined,
    inventory?: Inventory,
  ): Promise<{ result?: MigrationReport; error?: Error; calls: string[] }> {
    const calls: string[] = [];
    const workers = await Promise.all([
      Worker.create({ connection: env.nativeConnection, taskQueue: ORCHESTRATOR_TASK_QUEUE, workflowBundle: bundle }),
      ...['cloud-a', 'cloud-b'].map((cloud) =>
        Worker.create({ connection: env.nativeConnection, taskQueue: cloudTaskQueue(cloud), activities: fakeCloud(cloud, calls, failAt, inventory) }),
      ),
    ]);
    const handle = await env.client.workflow.start('migrateInfrastructure', {
      taskQueue: ORCHESTRATOR_TASK_QUEUE,
      workflowId: `test-${Math.random().toString(36).slice(2)}`,
      args: [plan],
    });
    const run = Promise.all([handle.result() as Promise<MigrationReport>, operate(handle, calls)]).then(([result]) => result);
    let outcome: { result?: MigrationReport; error?: Error } = {};
    const [orchestrator, a, b] = workers as [Worker, Worker, Worker];
    await orchestrator.runUntil(a.runUntil(b.runUntil(run.then((result) => (outcome = { result }), (error: Error) => (outcome = { error })))));
    return { ...outcome, calls };
  }

  const plan = { name: 'unit', source: 'cloud-a', destination: 'cloud-b', containers: ['kv'] };

  it('runs the phases in order, each on the right cloud, and reports them', async () => {
    const { result, calls, error } = await migrate(plan);
    assert.equal(error, undefined);
    assert.deepEqual(calls.filter((c) => !c.endsWith(':preflight')).slice(0, -2), [
      'cloud-a:inventory',
      'cloud-a:claimContainers',
      'cloud-b:replicateNetworks',
      'cloud-b:stretchNetworks',
      'cloud-a:stretchNetworks',
      'cloud-b:preparePort',
      'cloud-b:prepareReceive',
      'cloud-a:sendRootfs',
      'cloud-b:receiveRootfs',
      'cloud-a:checkpoint',
      'cloud-a:sendCheckpoint',
      'cloud-b:restore',
    ]);
    // Release runs on both sides at once, in either order.
    assert.deepEqual(calls.slice(-2).sort(), ['cloud-a:releaseSource', 'cloud-b:cleanupReceived']);
    assert.ok(calls.includes('cloud-a:preflight') && calls.includes('cloud-b:preflight'));
    assert.ok(result);
    assert.equal(result.bytesMoved, 6000);
    assert.deepEqual(result.phases.map((p) => p.phase), ['inventory', 'preflight', 'network', 'prepare', 'pre-copy', 'checkpoint', 'transfer', 'restore', 'release']);
    const sum = result.phases.reduce((s, p) => s + p.durationMs, 0);
    assert.ok(sum <= result.wallMs, `phases sum ${sum} ms > wall ${result.wallMs} ms`);
    assert.equal(result.containers[0]?.imageBytes, 4000);
    assert.equal(result.containers[0]?.verifiedBytes, 5000);
    assert.deepEqual(result.warnings, []);
  });

  it('rolls back in reverse order when the restore fails, and resumes the container at the source', async () => {
    const { error, calls } = await migrate(plan, 'cloud-b:restore');
    assert.ok(error instanceof WorkflowFailedError);
    assert.match(String(error.cause?.message), /restore failed: injected failure in restore[\s\S]*rolled back: the VI runs at the source/);
    const afterFailure = calls.slice(calls.indexOf('cloud-b:restore') + 1);
    assert.deepEqual(afterFailure, [
      'cloud-b:discardContainer',
      'cloud-a:restoreAtSource',
      'cloud-b:removePort',
      'cloud-b:cleanupReceived',
      'cloud-a:unstretchNetworks',
      'cloud-b:unstretchNetworks',
      'cloud-b:removeNetworks',
      'cloud-a:releaseClaims',
    ]);
  });

  it('does not undo a committed container when releasing the source fails', async () => {
    const { result, error, calls } = await migrate(plan, 'cloud-a:releaseSource');
    assert.equal(error, undefined);
    assert.ok(result);
    assert.equal(result.warnings.length, 1);
    assert.match(result.warnings[0]!, /could not release kv at cloud-a/);
    assert.ok(!calls.includes('cloud-a:restoreAtSource'));
    assert.ok(!calls.includes('cloud-b:discardContainer'));
  });

  it('fails a bad plan before any activity runs', async () => {
    const { error, calls } = await migrate({ name: 'unit', source: 'cloud-a', destination: 'cloud-a', containers: [] });
    assert.ok(error instanceof WorkflowFailedError);
    assert.match(String(error.cause?.message), /invalid migration plan[\s\S]*no container[\s\S]*must differ/);
    assert.deepEqual(calls, []);
  });

  it('changes nothing when a pre-flight check fails', async () => {
    const { error, calls } = await migrate(plan, 'cloud-b:preflight');
    assert.ok(error instanceof WorkflowFailedError);
    // Only the claims are released: this migration never took any.
    assert.deepEqual(calls.filter((c) => !['cloud-a:inventory', 'cloud-a:preflight', 'cloud-b:preflight'].includes(c)), ['cloud-a:releaseClaims']);
  });

  it('waits for the operator before freezing, then goes on when approved', async () => {
    const { result, error, calls } = await migrate({ ...plan, options: { approveCutover: true } }, undefined, async (handle, callsSoFar) => {
      const waiting = await waitForState(handle, 'awaiting-approval');
      assert.equal(waiting.phase, 'awaiting approval');
      assert.ok(!callsSoFar.includes('cloud-a:checkpoint'), 'froze before approval');
      assert.ok(callsSoFar.includes('cloud-b:receiveRootfs'), 'the rootfs is not pre-copied before the wait');
      await approveCutover(handle);
    });
    assert.ok(result, String(error));
    assert.ok(calls.includes('cloud-a:checkpoint') && calls.includes('cloud-b:restore'));
  });

  it('rolls back without freezing anything when aborted while awaiting approval', async () => {
    const { error, calls } = await migrate({ ...plan, options: { approveCutover: true } }, undefined, async (handle) => {
      await waitForState(handle, 'awaiting-approval');
      await abortMigration(handle, 'maintenance window closed');
    });
    assert.ok(error instanceof WorkflowFailedError);
    assert.match(String(error.cause?.message), /maintenance window closed[\s\S]*rolled back/);
    assert.ok(!calls.includes('cloud-a:checkpoint'));
    assert.ok(!calls.includes('cloud-a:restoreAtSource'), 'nothing was frozen, nothing to resume');
    assert.deepEqual(calls.slice(-6), ['cloud-b:removePort', 'cloud-b:cleanupReceived', 'cloud-a:unstretchNetworks', 'cloud-b:unstretchNetworks', 'cloud-b:removeNetworks', 'cloud-a:releaseClaims']);
  });

  it('copies a writable rootfs only after the freeze, so no write is lost', async () => {
    const writable: Inventory = { ...readonlyInventory, containers: [{ ...kv, readonlyRootfs: false }] };
    const { result, calls } = await migrate(plan, undefined, undefined, writable);
    assert.ok(result);
    const order = calls.filter((c) => /:(checkpoint|sendCheckpoint|sendRootfs|receiveRootfs|restore)$/.test(c));
    assert.deepEqual(order, ['cloud-a:checkpoint', 'cloud-a:sendCheckpoint', 'cloud-a:sendRootfs', 'cloud-b:receiveRootfs', 'cloud-b:restore']);
    assert.ok(!result.phases.some((p) => p.phase === 'pre-copy'));
    assert.deepEqual(result.containers[0]?.artifacts.map((a) => a.kind), ['rootfs', 'checkpoint']);
  });

  it('keeps a committed container at the destination when a later one fails, and says so', async () => {
    const db: ContainerSpec = { ...kv, name: 'db', ip: '192.0.2.11', mac: '02:00:00:00:00:0b' };
    const two: Inventory = { ...readonlyInventory, containers: [kv, db] };
    const { error, calls } = await migrate({ ...plan, containers: ['kv', 'db'] }, 'cloud-b:restore#2', undefined, two);
    assert.ok(error instanceof WorkflowFailedError);
    assert.match(String(error.cause?.message), /rolled back: kv stays at cloud-b \(committed\); the rest runs at the source/);
    const afterFailure = calls.slice(calls.lastIndexOf('cloud-b:restore') + 1);
    // Only db's steps are undone; the network stays stretched for kv.
    assert.deepEqual(afterFailure, ['cloud-b:discardContainer', 'cloud-a:restoreAtSource', 'cloud-b:removePort', 'cloud-b:cleanupReceived', 'cloud-a:releaseClaims']);
  });
});
