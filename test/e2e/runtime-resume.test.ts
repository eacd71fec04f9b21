/**
 * A container frozen for a dump whose CRIU died after locking the container's network: CRIU's
 * lock (an nftables table `inet CRIU-<run id>` dropping all but its own packets) is left behind,
 * and a rollback that thaws the container must not resume it unreachable behind that lock.
 * The lock is laid here as CRIU lays it (network-lock nftables, criu/net.c); the service's own
 * answer over the network is the observer.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { deployVi } from '../../activities/deploy-vi';
import { benchVi, memberIp, memberName } from '../../bench/bench-vi';
import { run } from '../../lib/exec';
import { criuPath, testbedsDir } from '../../lib/paths';
import { waitFor } from '../../lib/processes';
import { openLocalCloud } from '../../providers/local/local-cloud';
import { testbedDown, testbedUp, type TestbedRecord } from '../../providers/local/testbed';

const ID = 'mvresume';
const stateDir = path.join(testbedsDir, ID);

describe('a container thawed after a dump that died', function () {
  this.timeout(120_000);
  let record: TestbedRecord;

  before(async () => {
    await testbedDown(stateDir, ID);
    record = await testbedUp({ id: ID, stateDir, clouds: ['cloud-a', 'cloud-b'], wanGateway: '203.0.113.1', wanPrefixLength: 25, wanRateMbit: 1000, criuPath, hostLink: '198.18.0.24/30' });
  });

  after(async () => {
    await testbedDown(stateDir, ID);
  });

  it('runs reachable again: the lock its CRIU left is removed before the thaw', async () => {
    const cloud = openLocalCloud(stateDir, 'cloud-a');
    const edge = record.clouds[0]!.netns;
    const name = memberName(0);
    await deployVi(cloud, benchVi(1, 1));
    const ask = async () => (await run('busybox', ['sh', '-c', `echo GET | busybox nc -w 1 ${memberIp(0)} 7000`], { netns: edge, allowFailure: true })).stdout.trim();
    await waitFor(`${name} to answer`, async () => /^\d+$/.test(await ask()), 30_000, 100);
    // Frozen as the worker freezes it for a dump, then CRIU's lock, as a CRIU killed after locking leaves it.
    const runcRoot = path.join(record.clouds[0]!.dir, 'runc');
    await run('runc', ['--root', runcRoot, 'pause', name]);
    const pid = JSON.parse((await run('runc', ['--root', runcRoot, 'state', name])).stdout).pid as number;
    const nft = (args: string[], input?: string) => run('nsenter', [`--net=/proc/${pid}/ns/net`, 'nft', ...args], input === undefined ? {} : { input });
    await nft(['-f', '-'], [
      'table inet CRIU-dead-dump {',
      '  chain output { type filter hook output priority 0; policy drop; meta mark 0xc114 accept; }',
      '  chain input { type filter hook input priority 0; policy drop; meta mark 0xc114 accept; }',
      '}',
    ].join('\n'));
    assert.match((await nft(['list', 'tables'])).stdout, /table inet CRIU-dead-dump/);
    await cloud.runtime.resume(name);
    assert.equal(await cloud.runtime.status(name), 'running');
    assert.doesNotMatch((await nft(['list', 'tables'])).stdout, /CRIU-/, 'the dead dump\'s lock is still there');
    await waitFor(`${name} to answer after the thaw`, async () => /^\d+$/.test(await ask()), 10_000, 100);
  });
});
