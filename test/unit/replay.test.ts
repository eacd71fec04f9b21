/**
 * Upgrade safety: histories recorded from an earlier release of the workflows (committed under
 * test/fixtures/histories, protobuf-encoded as the server sends them) replay under today's code. A change that would break a migration in
 * flight when the orchestrator is upgraded — a step added, removed or reordered without
 * `patched()` — fails here with Temporal's nondeterminism error (README, "Changing the workflow").
 *
 * To add the histories of a new release (keep the old ones):
 *   MIGRAVI_RECORD_HISTORIES=1 npx mocha dist/test/unit/workflow.test.js
 */
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { temporal } from '@temporalio/proto';
import { bundleWorkflowCode, DefaultLogger, Runtime, Worker, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { repoRoot } from '../../lib/paths';

const HISTORIES_DIR = path.join(repoRoot, 'test', 'fixtures', 'histories');
/** The shapes every release must keep replaying. */
const REQUIRED = ['happy-path', 'rollback-restore-failed', 'rollback-dead-destination', 'clean-up-after-rollback', 'post-copy', 'split-vi', 'evacuation'];

describe('replay: migrations recorded by earlier releases replay under this code', function () {
  this.timeout(120_000);
  let bundle: WorkflowBundleWithSourceMap;
  const silent = { log: () => undefined, trace: () => undefined, debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };

  before(async () => {
    Runtime.install({ logger: new DefaultLogger('ERROR', () => undefined) });
    bundle = await bundleWorkflowCode({ workflowsPath: require.resolve('../../workflows'), logger: silent });
  });

  it('has a recorded history of every shape', async () => {
    const names = (await readdir(HISTORIES_DIR)).map((f) => f.split('--')[0]!);
    for (const name of REQUIRED) assert.ok(names.includes(name), `no recorded history ${name}--<workflow id>.binpb in ${HISTORIES_DIR}`);
  });

  it('replays every recorded history without a nondeterminism error', async () => {
    const files = (await readdir(HISTORIES_DIR)).filter((f) => f.endsWith('.binpb')).sort();
    // NAME--WORKFLOW_ID.binpb: the workflow ran under that id (its child workflows' ids derive from it).
    const histories = await Promise.all(files.map(async (f) => ({ workflowId: path.basename(f, '.binpb').split('--')[1]!, history: temporal.api.history.v1.History.decode(await readFile(path.join(HISTORIES_DIR, f))) })));
    const failed: string[] = [];
    let replayed = 0;
    for await (const result of Worker.runReplayHistories({ workflowBundle: bundle }, histories)) {
      replayed++;
      if (result.error) failed.push(`${result.workflowId}: ${result.error.message}`);
    }
    assert.equal(replayed, files.length);
    assert.deepEqual(failed, []);
  });
});
