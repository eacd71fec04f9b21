/**
 * A real server, not written for this project, migrates live: Debian's nginx (rootfs built by
 * setup from the Debian packages), whose master runs as root and whose worker runs as www-data —
 * a non-root process that CRIU can dump on these machines only through the rlimit shim
 * (scripts/criu-prlimit-shim.c). A client holds one keep-alive HTTP connection; nginx answers
 * each request with the connection's request number, kept in the worker's memory. nginx and the
 * counter service move as one group: frozen together, restored together.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describeCloud, startMigration } from '../../client/migravi-client';
import type { ClientStatus } from '../../demo/client';
import { DEMO_VI, demoNetwork, webContainer } from '../../demo/demo-vi';
import { startDemoClient, webTarget, type DemoClient } from '../../demo/scenario';
import { run } from '../../lib/exec';
import { nginxRootfs } from '../../lib/paths';
import type { MigrationReport } from '../../lib/types';
import { deployContainer } from '../../providers/local/local-cloud';
import { E2eStack } from './stack';

const web = webContainer;

/** Users of the processes of a container, read from /proc through runc's list of its PIDs. */
async function processUsers(stack: E2eStack, cloud: string, container: string): Promise<number[]> {
  const runcRoot = path.join(stack.cloud(cloud).config.dir, 'runc');
  const { stdout } = await run('runc', ['--root', runcRoot, 'ps', '--format', 'json', container]);
  return (JSON.parse(stdout) as number[]).map((pid) => Number(readFileSync(`/proc/${pid}/status`, 'utf8').match(/^Uid:\s+(\d+)/m)![1])).sort((a, b) => a - b);
}

describe('a real server from Debian packages, with a non-root worker, migrates live in a group (nginx + kv)', function () {
  this.timeout(300_000);
  let stack: E2eStack;
  let webClient: DemoClient;
  let statusBefore: ClientStatus;
  let kvBefore: ClientStatus;
  let report: MigrationReport;
  let window: { from: number; to: number };

  before(async () => {
    stack = await E2eStack.start({ id: 'mvsrv', ballastMiB: 8 });
    await deployContainer(stack.cloud('cloud-a'), demoNetwork, web, nginxRootfs);
    webClient = await startDemoClient(stack.record, 'cloud-a', webTarget);
    statusBefore = await webClient.waitForReplies(50);
    kvBefore = await stack.client.waitForReplies(20);
    const from = Date.now();
    // The plan names the VI: inventory finds its containers (kv and web) at the source.
    const handle = await startMigration(stack.temporal, { name: 'group', vi: DEMO_VI, source: 'cloud-a', destination: 'cloud-b' });
    report = await handle.result();
    window = { from, to: Date.now() };
  });

  after(async function () {
    const unhappy = this.test?.parent?.tests.some((t) => t.state !== 'passed') ?? true;
    await stack?.stop(unhappy);
  });

  it('runs a worker that is not root (what CRIU could not dump here without the shim)', async () => {
    assert.deepEqual(await processUsers(stack, 'cloud-b', 'web'), [0, 33], 'expected the root master and the www-data worker');
  });

  it('keeps the client on its one HTTP connection, the request count continuing in the worker\'s memory', async () => {
    const after = await webClient.waitForReplies(100);
    assert.equal(after.error, undefined);
    assert.equal(after.localPort, statusBefore.localPort, 'the client is on another connection');
    assert.equal(after.discontinuities, 0, 'a request number was not the previous + 1');
    assert.equal(after.lastValue, after.replies, 'nginx counted other requests than the client sent on this connection');
  });

  it('runs nginx and kv in cloud-b only, leaving nothing in cloud-a', async () => {
    await stack.assertOnlyAt('cloud-b', 'web');
    await stack.assertOnlyAt('cloud-b', 'kv');
    await stack.assertConnectionKept(kvBefore);
  });

  it('enforces the web server\'s rules at the destination too: its clients pass, another container is dropped', async () => {
    const get = (fromPort: string) =>
      run('busybox', ['sh', '-c', `printf "GET / HTTP/1.0\\r\\n\\r\\n" | timeout 3 busybox nc -w 2 ${web.ip} 80`], { netns: stack.cloud(fromPort === 'client' ? 'cloud-a' : 'cloud-b').controlPlane.portNetns(fromPort), allowFailure: true });
    assert.match((await get('client')).stdout, /^HTTP\/1\.1 200 OK/, 'the allowed client was refused');
    const intruder = await get('kv'); // kv (192.0.2.10) is not in web's rules
    assert.equal(intruder.stdout, '', 'a connection the rules forbid was answered');
    const rules = await run('nft', ['list', 'table', 'inet', 'migravi_rules'], { netns: stack.cloud('cloud-b').controlPlane.portNetns('web') });
    assert.match(rules.stdout, /ip saddr 192\.0\.2\.100 tcp dport 80 accept/);
  });

  it('lists what each cloud hosts, from that cloud\'s worker: the VI now in cloud-b, nothing of it in cloud-a', async () => {
    const b = await describeCloud(stack.temporal, 'cloud-b');
    assert.deepEqual(b.containers.map((c) => [c.vi, c.name, c.ip, c.status]), [['demo', 'kv', '192.0.2.10', 'running'], ['demo', 'web', '192.0.2.20', 'running']]);
    assert.deepEqual(b.networks.map((n) => [n.name, n.stretchedTo]), [['vi-net', [stack.cloud('cloud-a').config.publicIp]]]);
    assert.deepEqual((await describeCloud(stack.temporal, 'cloud-a')).containers, []);
    // The same through the command line.
    const cli = await run(process.execPath, [path.join(__dirname, '..', '..', 'client', 'cli.js'), 'list', 'cloud-b', '--temporal', '127.0.0.1:7243']);
    assert.match(cli.stdout, /network vi-net 192\.0\.2\.0\/24 \(stretched to /);
    assert.match(cli.stdout, /demo +web +192\.0\.2\.20 +running/);
  });

  it('froze the group together: the two clients\' blackouts overlap, and the report shows each and the group\'s', async () => {
    const blackout = (s: ClientStatus) => {
      const gaps = s.longGaps.filter((g) => g.endedAt >= window.from && g.endedAt - g.ms <= window.to);
      assert.ok(gaps.length > 0, 'the client saw no blackout at all');
      const longest = gaps.reduce((a, b) => (b.ms > a.ms ? b : a));
      return { start: longest.endedAt - longest.ms, end: longest.endedAt };
    };
    const web = blackout(await webClient.status());
    const kv = blackout(await stack.client.status());
    assert.ok(web.start < kv.end && kv.start < web.end, `blackouts do not overlap: web ${JSON.stringify(web)}, kv ${JSON.stringify(kv)}`);
    assert.deepEqual(report.groups.map((g) => g.containers), [['kv', 'web']]);
    for (const c of report.containers) assert.ok(c.frozenMs > 0 && c.frozenMs <= report.groups[0]!.frozenMs);
  });
});
