/**
 * Post-copy end to end, nothing mocked: the demo service (64 MiB of memory ballast) moves with
 * `postCopy`, so it restarts at the destination before its memory has crossed the link (100 Mbit/s
 * here: the window lasts seconds, long enough to break things inside it). Then the two ways a
 * page source dies mid-window — CRIU's lazy-pages daemon at the destination, the source's worker
 * (its page server, serving from the held processes) — are done for real (kill -9 by PID), the
 * latter before the image of the held processes was complete: the memory must still re-read intact, the
 * connection stay open, and the report say what was recovered. And a restore that fails after
 * CRIU unlocked the network (its processes killed): the retry must find the connections' addresses
 * free, and no client may have been told its connection closed.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile, readdir, readlink, realpath } from 'node:fs/promises';
import path from 'node:path';
import { BENCH_VI, benchVi, memberName } from '../../bench/bench-vi';
import { ask as askService } from '../../bench/observers';
import { deployVi, followMigration, startMigration } from '../../client/migravi-client';
import type { ClientStatus } from '../../demo/client';
import { KV_IP, KV_PORT } from '../../demo/demo-vi';
import { run } from '../../lib/exec';
import { demoRootfs } from '../../lib/paths';
import { parseViSpec } from '../../lib/vi-spec';
import { isAlive, waitFor } from '../../lib/processes';
import type { MigrationReport } from '../../lib/types';
import { IdleConnection } from './idle-connection';
import { E2eStack } from './stack';

const BALLAST_MIB = 64;

/** Every file named `name` under a directory tree. */
async function findFiles(dir: string, name: string): Promise<string[]> {
  if (!existsSync(dir)) return [];
  return (await readdir(dir, { recursive: true })).filter((f) => path.basename(f) === name).map((f) => path.join(dir, f));
}

describe('post-copy migration (end to end)', function () {
  this.timeout(300_000);
  let stack: E2eStack;

  before(async () => {
    stack = await E2eStack.start({ id: 'mvpost', ballastMiB: BALLAST_MIB, wanRateMbit: 100 });
  });

  after(async function () {
    const unhappy = this.test?.parent?.suites.flatMap((suite) => suite.tests).some((t) => t.state !== 'passed') ?? true;
    await stack?.stop(unhappy);
  });

  /** Migrates kv; `duringWindow` runs once the restore is done and the memory is still arriving. */
  async function migrate(name: string, source: string, destination: string, duringWindow?: () => Promise<void>) {
    const before = await stack.client.waitForReplies(20);
    const tx0 = await stack.wanTxBytes(source);
    const handle = await startMigration(stack.temporal, { name, source, destination, containers: ['kv'], options: { postCopy: true } });
    let inWindow: Promise<void> | undefined;
    const report = await followMigration(handle, (p) => {
      if (p.phase === 'post-copy' && duringWindow && !inWindow) inWindow = duringWindow();
    }, 50);
    await inWindow;
    return { report, statusBefore: before, wanTx: (await stack.wanTxBytes(source)) - tx0 };
  }

  /** `migrate` with these faults armed (and disarmed after, whatever happens); also says which fired. */
  async function migrateWithFaults(faults: Parameters<E2eStack['setFaults']>[0], ...args: Parameters<typeof migrate>) {
    await stack.setFaults(faults);
    try {
      const result = await migrate(...args);
      return { ...result, fired: await stack.firedFaults() };
    } finally {
      await stack.setFaults([]);
    }
  }

  describe('cloud-a -> cloud-b', () => {
    let report: MigrationReport;
    let statusBefore: ClientStatus;
    let wanTx: number;
    let imageAt: string | undefined;
    let imageFiles: string[] = [];

    before(async () => {
      ({ report, statusBefore, wanTx } = await migrate('post-1', 'cloud-a', 'cloud-b', async () => {
        const [link] = (await findFiles(stack.cloud('cloud-a').workDir, 'checkpoint')).filter((f) => !f.includes('.'));
        imageAt = link ? await readlink(link) : undefined;
        imageFiles = imageAt ? await readdir(imageAt) : [];
      }));
    });

    it('runs it in cloud-b only, the connection kept and every memory word intact', async () => {
      await stack.assertOnlyAt('cloud-b');
      await stack.assertConnectionKept(statusBefore, 50);
      assert.equal(await stack.kvSelfCheck(), `OK ${BALLAST_MIB}`);
    });

    it('restores before the memory arrives: the freeze sends only the process state, the pages follow', () => {
      const c = report.containers[0]!;
      assert.ok(c.postCopy, 'no post-copy report');
      assert.ok(c.postCopy.lazyBytes >= BALLAST_MIB * 1048576, `only ${c.postCopy.lazyBytes} B were left for after the restore`);
      const sent = c.artifacts.find((a) => a.kind === 'checkpoint')!;
      assert.ok(sent.bytes < 8 * 1048576, `the freeze sent ${sent.bytes} B of image`);
      assert.ok(c.postCopy.windowMs > 0);
      assert.equal(c.postCopy.rescuedPages, 0);
      assert.deepEqual(report.phases.map((p) => p.phase).filter((p) => ['checkpoint', 'restore', 'post-copy', 'release'].includes(p)), ['checkpoint', 'restore', 'post-copy', 'release']);
      // The kernel's counters: the memory did cross the link, after the restore.
      assert.ok(wanTx >= BALLAST_MIB * 1048576, `the source's WAN interface sent only ${wanTx} B`);
    });

    it('kept the image in memory at the source, and leaves no image, page server, lazy-pages daemon or guard behind', async () => {
      // During the window the source's image was a link into its tmpfs share, holding the pages.
      assert.ok(imageAt?.startsWith(stack.cloud('cloud-a').memoryDir! + '/'), `the image was at ${imageAt}`);
      assert.ok(imageFiles.some((f) => /^pages-\d+\.img$/.test(f)), `the image in memory held ${imageFiles.join(', ')}`);
      for (const cloud of ['cloud-a', 'cloud-b']) {
        const memoryDir = stack.cloud(cloud).memoryDir!;
        const left = existsSync(memoryDir) ? await readdir(memoryDir, { recursive: true }) : [];
        assert.deepEqual(left, [], `${cloud} kept ${memoryDir}/${left.join(', ')}`);
        for (const file of ['page-server.pid', 'lazy-pages.pid', 'uffd-guard.pid']) {
          assert.deepEqual(await findFiles(stack.cloud(cloud).workDir, file), [], `${cloud} kept ${file}`);
        }
      }
    });
  });

  describe('cloud-b -> cloud-a, CRIU\'s lazy-pages daemon killed mid-window', () => {
    let report: MigrationReport;
    let statusBefore: ClientStatus;
    let killed: number | undefined;

    before(async () => {
      ({ report, statusBefore } = await migrate('post-2', 'cloud-b', 'cloud-a', async () => {
        const [pidFile] = await findFiles(stack.cloud('cloud-a').workDir, 'lazy-pages.pid');
        assert.ok(pidFile, 'no lazy-pages daemon at the destination');
        killed = Number(await readFile(pidFile, 'utf8'));
        process.kill(killed, 'SIGKILL');
      }));
    });

    it('killed the daemon while pages were still missing', async () => {
      assert.ok(killed);
      await waitFor('the killed daemon to be gone', () => !isAlive(killed!), 5_000);
      const c = report.containers[0]!;
      assert.ok(c.postCopy!.rescuedPages > 0, 'the worker copied no page in: was the daemon killed too late?');
      assert.match(c.postCopy!.recoveries.join('\n'), /lazy-pages daemon was lost/);
    });

    it('still moves it whole: in cloud-a only, connection kept, memory intact (no zero pages)', async () => {
      await stack.assertOnlyAt('cloud-a');
      await stack.assertConnectionKept(statusBefore, 50);
      assert.equal(await stack.kvSelfCheck(), `OK ${BALLAST_MIB}`);
    });
  });

  describe('cloud-a -> cloud-b, the source\'s worker (and its page server) and its dump\'s CRIU killed mid-window, before the image was written', () => {
    let report: MigrationReport;
    let statusBefore: ClientStatus;
    let fired: string[] = [];

    before(async () => {
      // The image written from the held processes stops after its first 4 MiB for longer than the
      // window lasts: the worker killed meanwhile leaves neither a page server nor a complete image,
      // only the dump holding the frozen processes.
      const slowImage = [{ id: 'slow-image', process: 'cloud-a', at: 'post-copy:writing-image', action: 'delay' as const, ms: 20_000, container: 'kv' }];
      ({ report, statusBefore, fired } = await migrateWithFaults(slowImage, 'post-3', 'cloud-a', 'cloud-b', async () => {
        await waitFor('the image to be half-written', async () => (await stack.firedFaults()).includes('slow-image'), 10_000, 20);
        const [image] = (await findFiles(stack.cloud('cloud-a').workDir, 'checkpoint')).filter((f) => !f.includes('.'));
        assert.ok(image && !existsSync(`${image}.work/written-from-processes.json`), 'the image was complete before the worker was killed');
        // The dump's runc and CRIU too (their process group): the frozen processes are all that is left of the memory.
        const hold = JSON.parse(await readFile(`${await realpath(image)}.eager.work/hold.json`, 'utf8')) as { pid: number };
        process.kill(-hold.pid, 'SIGKILL');
        await stack.kill('cloud-a');
      }));
      await stack.settle();
    });

    it('a new worker writes the image from the processes still frozen there, serves it, and the missing pages are filled: in cloud-b only, connection kept, memory intact', async () => {
      assert.ok(fired.includes('slow-image'), 'the image was never slowed');
      assert.ok(stack.restarts.includes('cloud-a'), 'the source\'s worker was not restarted');
      const c = report.containers[0]!;
      assert.ok(c.postCopy!.rescuedPages > 0, 'no page was copied in after the page source died');
      assert.match(report.events.join('\n'), /starting its page server at cloud-a again/);
      await stack.assertOnlyAt('cloud-b');
      await stack.assertConnectionKept(statusBefore, 50);
      assert.equal(await stack.kvSelfCheck(), `OK ${BALLAST_MIB}`);
    });
  });

  describe('cloud-b -> cloud-a, the destination\'s worker killed mid-window', () => {
    let report: MigrationReport;
    let statusBefore: ClientStatus;

    before(async () => {
      ({ report, statusBefore } = await migrate('post-4', 'cloud-b', 'cloud-a', async () => stack.kill('cloud-a')));
      await stack.settle();
    });

    it('a new worker finds the guarded process and fills its missing pages: in cloud-a only, connection kept, memory intact', async () => {
      assert.ok(stack.restarts.includes('cloud-a'), 'the worker was not restarted');
      const c = report.containers[0]!;
      assert.ok(c.postCopy!.rescuedPages > 0, 'no page was copied in after the worker (and its forward to the page server) died');
      await stack.assertOnlyAt('cloud-a');
      await stack.assertConnectionKept(statusBefore, 50);
      assert.equal(await stack.kvSelfCheck(), `OK ${BALLAST_MIB}`);
    });
  });

  describe('cloud-a -> cloud-b, the link between the clouds cut for 5 s mid-window', () => {
    let report: MigrationReport;
    let statusBefore: ClientStatus;

    before(async () => {
      ({ report, statusBefore } = await migrate('post-5', 'cloud-a', 'cloud-b', async () => {
        await stack.cutLink('cloud-b', true);
        try {
          // Longer than the forward's SSH keep-alive (3 s): CRIU's daemon loses its page source.
          await new Promise((resolve) => setTimeout(resolve, 5_000));
        } finally {
          await stack.cutLink('cloud-b', false);
        }
      }));
    });

    it('waits out the cut with the process stalled (never on zeros), then completes: in cloud-b only, connection kept, memory intact', async () => {
      const c = report.containers[0]!;
      assert.ok(c.postCopy!.rescuedPages > 0, 'no page was copied in after the cut');
      await stack.assertOnlyAt('cloud-b');
      await stack.assertConnectionKept(statusBefore, 50);
      assert.equal(await stack.kvSelfCheck(), `OK ${BALLAST_MIB}`);
    });
  });

  describe('cloud-b -> cloud-a, the lazy-pages daemon loses its page source before the restore ends', () => {
    let report: MigrationReport;
    let statusBefore: ClientStatus;
    let fired: string[] = [];
    let idle: IdleConnection;

    before(async () => {
      // A second, idle connection: nothing unread on the service's side, so a killed service
      // would close it with a FIN (the demo client's, always mid-request, gets a RST instead).
      idle = await IdleConnection.open(stack.cloud('cloud-a').controlPlane.portNetns('client'), KV_IP, KV_PORT);
      assert.match(await idle.ask('GET'), /^\d+$/);
      // The forward drops the daemon's first connection: the daemon ends, and CRIU, which has
      // restored the processes and unlocked the network by then, fails and kills them. Their
      // sockets must not tell the clients anything, nor keep the next attempt from binding them.
      ({ report, statusBefore, fired } = await migrateWithFaults([{ process: 'cloud-a', at: 'restore:page-source', action: 'fail-once', container: 'kv' }], 'post-7', 'cloud-b', 'cloud-a'));
    });

    after(async () => idle?.close());

    it('failed its first restore after CRIU had unlocked the network', () => {
      assert.deepEqual(fired, ['f0']);
      const failed = report.events.find((e) => e.startsWith('kv: restore attempt 1 failed'));
      assert.ok(failed, `no failed restore attempt among the events:\n${report.events.join('\n')}`);
      assert.match(failed, /The Network was unlocked/);
    });

    it('restores it on the next attempt: in cloud-a only, neither client\'s connection closed, memory intact', async () => {
      await stack.assertOnlyAt('cloud-a');
      await stack.assertConnectionKept(statusBefore, 50);
      assert.match(await idle.ask('GET'), /^\d+$/, `the idle connection's client saw: ${idle.output.join(' | ')}`);
      assert.equal(await stack.kvSelfCheck(), `OK ${BALLAST_MIB}`);
    });
  });

  describe('cloud-a -> cloud-b, the source\'s worker killed as soon as its dump holds the processes', () => {
    let report: MigrationReport;
    let statusBefore: ClientStatus;
    let fired: string[] = [];

    before(async () => {
      // Killed before it recorded the dump: the next attempt finds the container frozen, and must
      // go on from the dump that holds it (thawing it under CRIU, or dumping it again, cannot work).
      ({ report, statusBefore, fired } = await migrateWithFaults([{ id: 'after-held-dump', process: 'cloud-a', at: 'checkpoint:after-dump', action: 'kill', container: 'kv' }], 'post-8', 'cloud-a', 'cloud-b'));
      await stack.settle();
    });

    it('the next attempt takes the held dump over: in cloud-b only, connection kept, memory intact', async () => {
      assert.ok(fired.includes('after-held-dump'), 'the worker was not killed');
      assert.ok(stack.restarts.includes('cloud-a'), 'the source\'s worker was not restarted');
      assert.ok(report.containers[0]!.postCopy, 'not moved by post-copy');
      await stack.assertOnlyAt('cloud-b');
      await stack.assertConnectionKept(statusBefore, 50);
      assert.equal(await stack.kvSelfCheck(), `OK ${BALLAST_MIB}`);
    });
  });

  // Last of the kv moves: the killed container takes the client's connection with it.
  describe('cloud-b -> cloud-a, the restored container killed mid-window', () => {
    let failure: Error;

    before(async () => {
      try {
        await migrate('post-6', 'cloud-b', 'cloud-a', async () => {
          const state = await run('runc', ['--root', path.join(stack.cloud('cloud-a').config.dir, 'runc'), 'state', 'kv']);
          process.kill((JSON.parse(state.stdout) as { pid: number }).pid, 'SIGKILL');
        });
      } catch (err) {
        failure = err as Error;
      }
    });

    it('fails, rolls back to the image kept at the source, and says what was lost', async () => {
      assert.ok(failure, 'the migration did not fail');
      const message = String((failure as { cause?: Error }).cause?.message ?? failure.message);
      assert.match(message, /stopped at cloud-a before all of its memory had arrived/);
      assert.match(message, /kv ran at cloud-a for \d+ ms after its restore: a rollback now loses what it did there/);
      assert.match(message, /rolled back: the VI runs at the source/);
    });

    it('runs it again in cloud-b only, its memory intact as it was at the freeze', async () => {
      await stack.assertOnlyAt('cloud-b');
      assert.equal(await stack.kvSelfCheck(), `OK ${BALLAST_MIB}`);
    });
  });

  describe('a group of two, cloud-a -> cloud-b: the members restored first wait for their memory until the whole group runs', () => {
    const MEMBER_MIB = 32;
    const DELAY_MS = 2_500;
    let report: MigrationReport;
    let sentWhileRestoring = NaN;
    const ask = (cloud: string, member: number, line: string) => askService(stack.cloud(cloud).controlPlane.portNetns(memberName(member)), '127.0.0.1', 7000, line);

    before(async () => {
      await deployVi(stack.temporal, 'cloud-a', benchVi(2, MEMBER_MIB));
      for (const i of [0, 1]) await waitFor(`${memberName(i)} to answer`, async () => /^\d+$/.test(await ask('cloud-a', i, 'GET')), 60_000, 100);
      // c2's restore starts 2.5 s late: long enough for all of c1's memory to cross a 100 Mbit/s
      // link, were it not held until the group is restored.
      await stack.setFaults([{ process: 'cloud-b', at: 'restore:before-criu', action: 'delay', ms: DELAY_MS, container: memberName(1) }]);
      const handle = await startMigration(stack.temporal, { name: 'post-group', vi: BENCH_VI, source: 'cloud-a', destination: 'cloud-b', options: { postCopy: true } });
      let atRestore: Promise<number> | undefined;
      let atWindow: Promise<number> | undefined;
      report = await followMigration(handle, (p) => {
        if (p.phase === 'restore') atRestore ??= stack.wanTxBytes('cloud-a');
        if (p.phase === 'post-copy') atWindow ??= stack.wanTxBytes('cloud-a');
      }, 20);
      await stack.setFaults([]);
      if (atRestore && atWindow) sentWhileRestoring = (await atWindow) - (await atRestore);
    });

    it('sent next to nothing while the group was being restored (the source\'s WAN counter)', () => {
      const restore = report.phases.find((p) => p.phase === 'restore')!;
      assert.ok(restore.durationMs >= DELAY_MS, `the restore phase took ${restore.durationMs} ms: the delay did not hold c2 back`);
      assert.ok(Number.isFinite(sentWhileRestoring), 'the restore or the post-copy phase went unseen');
      assert.ok(sentWhileRestoring < 8 * 1048576, `the source sent ${sentWhileRestoring} B while c2 was still being restored`);
      for (const c of report.containers) assert.ok(c.postCopy && c.postCopy.lazyBytes >= MEMBER_MIB * 1048576, `${c.name} left too little for after the restore`);
    });

    it('then moved both whole: at cloud-b only (runc state), every memory word intact', async () => {
      for (const i of [0, 1]) {
        const name = memberName(i);
        assert.equal(await stack.cloud('cloud-a').runtime.status(name), 'absent');
        assert.equal(await stack.cloud('cloud-b').runtime.status(name), 'running');
        assert.equal(await ask('cloud-b', i, 'CHECK'), `OK ${MEMBER_MIB}`);
      }
    });
  });

  describe('mode "auto": each group takes the way predicted shorter, streamed where a process forks', () => {
    it('moves the kv service (one process, 64 MiB over 100 Mbit/s) by post-copy, and says why', async () => {
      const source = await stack.whereKvRuns();
      const destination = source === 'cloud-a' ? 'cloud-b' : 'cloud-a';
      // (The stack's client lost its connection in the case above that killed the restored copy.)
      const report = await followMigration(await startMigration(stack.temporal, { name: 'auto-kv', source, destination, containers: ['kv'], options: { mode: 'auto' } }), () => undefined, 100);
      assert.equal(report.groups[0]?.mode, 'post-copy', report.groups[0]?.modeReason);
      assert.match(report.groups[0]!.modeReason!, /^post-copy predicted \d+\.\d\d s against \d+\.\d\d s streamed$/);
      // The memory came after the restore, through the destination's lazy-pages window.
      const window = report.containers[0]!.postCopy;
      assert.ok(window && window.lazyBytes >= BALLAST_MIB * 1048576, `the window brought ${window?.lazyBytes} B`);
      assert.equal(await stack.whereKvRuns(), destination);
      assert.equal(await stack.kvSelfCheck(), `OK ${BALLAST_MIB}`);
    });

    it('moves a shell loop (it forks a child every 0.2 s) streamed, naming the process that forked', async () => {
      await deployVi(stack.temporal, 'cloud-a', parseViSpec({
        name: 'forker',
        networks: [{ name: 'forker-net', cidr: '10.78.0.0/24', mtu: 1390 }],
        containers: [{ name: 'loop', rootfs: demoRootfs, command: ['/bin/busybox', 'sh', '-c', 'while true; do busybox sleep 0.2; done'], readonlyRootfs: true, networks: [{ network: 'forker-net', ip: '10.78.0.10', mac: '02:00:0a:4e:00:0a' }] }],
      }));
      // Read from the runtime, as the prediction will: a process younger than the container's first.
      await waitFor('the loop to have forked since its start', async () => Boolean(await stack.cloud('cloud-a').runtime.lateStartedProcess('loop')), 30_000, 100);
      const report = await followMigration(await startMigration(stack.temporal, { name: 'auto-loop', vi: 'forker', source: 'cloud-a', destination: 'cloud-b', options: { mode: 'auto' } }), () => undefined, 100);
      assert.equal(report.groups[0]?.mode, 'streamed');
      assert.match(report.groups[0]!.modeReason!, /^loop's processes fork \(process \d+ started \d+\.\d\d s after its first\), and post-copy stalls on forks/);
      assert.equal(report.containers[0]!.postCopy, undefined, 'a post-copy window ran');
      assert.equal(await stack.cloud('cloud-a').runtime.status('loop'), 'absent');
      assert.equal(await stack.cloud('cloud-b').runtime.status('loop'), 'running');
      // Still forking at the destination: its memory and its loop came over whole.
      await waitFor('the loop to fork at cloud-b', async () => Boolean(await stack.cloud('cloud-b').runtime.lateStartedProcess('loop')), 30_000, 100);
    });
  });
});
