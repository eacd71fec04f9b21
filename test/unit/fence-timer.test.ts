/**
 * The lease timer of a restored copy (providers/runtime/fence-timer.ts) as a real process: it
 * fires at its deadline unless disarmed, a renewal only moves a running timer's deadline later,
 * and a fired lease refuses to start again. (That it kills a running container is shown end to
 * end: the public-VI fault matrix, "restore:after-criu".)
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { isAlive, waitFor } from '../../lib/processes';
import { disarmFence, fenceFired, renewFence, startFence, stopFence } from '../../providers/runtime/fence-timer';

describe('the lease timer of a restored copy', function () {
  this.timeout(30_000);
  let dir: string;
  let root: string;
  const timerPid = async () => Number(await readFile(path.join(dir, 'fence.pid'), 'utf8'));

  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'migravi-fence-'));
    root = await mkdtemp(path.join(os.tmpdir(), 'migravi-fence-runc-')); // an empty runc root: no container to kill
  });

  afterEach(async () => {
    await stopFence(dir);
    await rm(dir, { recursive: true, force: true });
    await rm(root, { recursive: true, force: true });
  });

  it('fires at its deadline, then exits, and refuses to start again', async () => {
    await startFence(dir, root, 'kv', Date.now() + 300);
    const pid = await timerPid();
    assert.ok(isAlive(pid));
    assert.equal(fenceFired(dir), false);
    await waitFor('the timer to fire', () => fenceFired(dir), 10_000, 20);
    await waitFor('the timer to exit', () => !isAlive(pid), 10_000, 20);
    await assert.rejects(startFence(dir, root, 'kv', Date.now() + 10_000), /lease ran out/);
    await assert.rejects(renewFence(dir, 'kv', Date.now() + 10_000), /lease ran out/);
  });

  it('does not fire once disarmed, and leaves nothing a later lease would read', async () => {
    await startFence(dir, root, 'kv', Date.now() + 2_000);
    const pid = await timerPid();
    await disarmFence(dir, 'kv');
    assert.equal(isAlive(pid), false, 'disarm returned before the timer stopped');
    assert.equal(fenceFired(dir), false);
    for (const f of ['fence.until', 'fence.pid', 'fence.disarmed']) assert.equal(existsSync(path.join(dir, f)), false, `${f} left behind`);
  });

  it('moves a running deadline later, never earlier; a renewal without a running timer starts nothing', async () => {
    const until = async () => Number(await readFile(path.join(dir, 'fence.until'), 'utf8'));
    await renewFence(dir, 'kv', Date.now() + 5_000);
    assert.equal(existsSync(path.join(dir, 'fence.pid')), false, 'a renewal started a timer');
    const first = Date.now() + 3_000;
    await startFence(dir, root, 'kv', first);
    await renewFence(dir, 'kv', first - 1_000);
    assert.equal(await until(), first);
    await renewFence(dir, 'kv', first + 4_000);
    assert.equal(await until(), first + 4_000);
    // A new lease (a later migration's restore) is its own: a stale, later deadline left on disk does not stretch it.
    await disarmFence(dir, 'kv');
    await renewFence(dir, 'kv', Date.now() + 60_000); // came after the commit: nothing runs, nothing changes
    const second = Date.now() + 2_000;
    await startFence(dir, root, 'kv', second);
    assert.equal(await until(), second);
  });
});
