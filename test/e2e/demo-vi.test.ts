/**
 * The demo VI, deployed from its file and moved live as one group: the counter service, Debian's
 * nginx (master root, worker www-data: a non-root process CRIU can dump here only through the
 * rlimit shim), an application tier holding one psql session, and Debian's PostgreSQL (every
 * process non-root) with its data on a volume. Clients hold one connection to kv and one
 * keep-alive HTTP connection to nginx; the application writes a row every 50 ms through its one
 * connection to the database, across the second private network. Checked against the clients'
 * own records, the database's own view (its sessions, its start time, its rows), the runtime
 * and the kernel.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { deployVi, describeCloud, removeVi, startMigration } from '../../client/migravi-client';
import type { ClientStatus } from '../../demo/client';
import { DEMO_VI, loadDemoVi, WEB_IP } from '../../demo/demo-vi';
import { getFromOutside, resolveFromOutside, startDemoClient, waitForDbRows, webTarget, type DemoClient, type DemoDbView } from '../../demo/scenario';
import { parseCidr } from '../../lib/vi-spec';
import { run } from '../../lib/exec';
import type { MigrationReport } from '../../lib/types';
import { E2eStack } from './stack';

/** Users of the processes of a container, read from /proc through runc's list of its PIDs. */
async function processUsers(stack: E2eStack, cloud: string, container: string): Promise<number[]> {
  const runcRoot = path.join(stack.cloud(cloud).config.dir, 'runc');
  const { stdout } = await run('runc', ['--root', runcRoot, 'ps', '--format', 'json', container]);
  return (JSON.parse(stdout) as number[]).map((pid) => Number(readFileSync(`/proc/${pid}/status`, 'utf8').match(/^Uid:\s+(\d+)/m)![1])).sort((a, b) => a - b);
}

describe('the demo VI (kv, nginx, an application and PostgreSQL on a volume, two networks) moves live as one group', function () {
  this.timeout(300_000);
  let stack: E2eStack;
  let webClient: DemoClient;
  let statusBefore: ClientStatus;
  let kvBefore: ClientStatus;
  let report: MigrationReport;
  let window: { from: number; to: number };
  let dbBefore: DemoDbView;
  let publicBefore: string;
  let outsideBefore: string;
  let dnsBefore: string[];

  before(async () => {
    stack = await E2eStack.start({ id: 'mvsrv', ballastMiB: 8 });
    // The stack runs kv; deploying the whole VI file (same ballast) through cloud-a's worker adds the rest, leaves kv alone.
    const deployed = await deployVi(stack.temporal, 'cloud-a', await loadDemoVi({ ballastMiB: 8, volumeRoot: `${stack.stateDir}/volumes` }));
    assert.deepEqual([deployed.started, deployed.unchanged], [['web', 'app', 'db'], ['kv']]);
    dbBefore = await waitForDbRows(stack.record, 'cloud-a', 20);
    publicBefore = (await describeCloud(stack.temporal, 'cloud-a')).containers.find((c) => c.name === 'web')!.floatingIp!;
    outsideBefore = await getFromOutside(stack.record, publicBefore);
    dnsBefore = await resolveFromOutside(stack.record, 'www.vi.example.');
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

  it('runs non-root processes (what CRIU could not dump here without the shim): nginx\'s worker, every PostgreSQL process', async () => {
    assert.deepEqual(await processUsers(stack, 'cloud-b', 'web'), [0, 33], 'expected the root master and the www-data worker');
    const db = await processUsers(stack, 'cloud-b', 'db');
    assert.ok(db.length >= 5 && db.every((uid) => uid === 999), `PostgreSQL's processes: ${db.join(', ')}`);
  });

  it('keeps the database\'s memory and the connection between tiers: same server, same session, every row, still writing', async () => {
    const after = await waitForDbRows(stack.record, 'cloud-b', dbBefore.rows + 20);
    assert.equal(after.startedAt, dbBefore.startedAt, 'PostgreSQL was restarted');
    assert.equal(after.writer, dbBefore.writer, 'the application\'s session to the database is not the one it had');
    // A sequence logs 32 values ahead: a server restarted from its files (crash recovery) skips some.
    assert.equal(after.maxId, after.rows, 'row ids have a gap: the database lost its memory');
    assert.equal(await stack.cloud('cloud-b').runtime.status('app'), 'running', 'the application stopped (its psql session broke)');
  });

  it('moved the database\'s volume live: all of it before the freeze, only what the writes changed inside it, re-hashed at the destination', async () => {
    const db = report.containers.find((c) => c.name === 'db')!;
    const v = db.volumes!;
    assert.ok(v.preBytes > 10 << 20, `the pre round sent ${v.preBytes} bytes`);
    assert.ok(v.finalEntries > 0, 'nothing was sent inside the freeze though the application kept writing');
    assert.ok(v.finalBytes < v.preBytes / 2, `inside the freeze ${v.finalBytes} bytes of ${v.preBytes} were sent again`);
    const rounds = db.checks.filter((c) => c.kind === 'volume');
    assert.equal(rounds.length, 2);
    assert.ok(rounds.every((r) => r.files > 0 && /^[0-9a-f]{64}$/.test(r.recomputedSha256)));
  });

  it('keeps the client on its one HTTP connection, the request count continuing in the worker\'s memory', async () => {
    const after = await webClient.waitForReplies(100);
    assert.equal(after.error, undefined);
    assert.equal(after.localPort, statusBefore.localPort, 'the client is on another connection');
    assert.equal(after.discontinuities, 0, 'a request number was not the previous + 1');
    assert.equal(after.lastValue, after.replies, 'nginx counted other requests than the client sent on this connection');
  });

  it('gives web a public address and name: the outside world reached it in cloud-a, and reaches it in cloud-b at a new address its name now resolves to', async () => {
    const inRange = (address: string, range: string) => {
      const r = parseCidr(range)!;
      const v = parseCidr(`${address}/32`)!.net;
      return v >= r.net && v < r.net + 2 ** (32 - r.prefix);
    };
    assert.ok(inRange(publicBefore, stack.cloud('cloud-a').config.floatingRange), `${publicBefore} is not cloud-a's`);
    assert.equal(outsideBefore, '1\n', 'the outside world could not reach web through its floating IP in cloud-a');
    const web = report.containers.find((c) => c.name === 'web')!;
    assert.equal(web.floatingIp?.source, publicBefore);
    const publicAfter = web.floatingIp?.destination;
    assert.ok(publicAfter && inRange(publicAfter, stack.cloud('cloud-b').config.floatingRange), `${publicAfter} is not cloud-b's`);
    assert.equal(await getFromOutside(stack.record, publicAfter), '1\n', 'the outside world cannot reach web through its new floating IP');
    assert.equal(await getFromOutside(stack.record, publicBefore), '', 'the old floating IP still answers');
    // Its public name, asked of the real DNS server from outside: cloud-a's address before, cloud-b's after.
    assert.deepEqual(dnsBefore, [publicBefore]);
    assert.deepEqual(await resolveFromOutside(stack.record, 'www.vi.example.'), [publicAfter]);
    assert.ok(report.events.some((e) => e.startsWith(`DNS vi.example. at cloud-a: www.vi.example. → ${publicAfter}`)), `no DNS switch in the report's events: ${report.events.join(' | ')}`);
    assert.deepEqual(await stack.cloud('cloud-a').controlPlane.floatingIps(), []);
    const wan = (await run('ip', ['-o', 'addr', 'show', 'dev', 'wan0'], { netns: stack.cloud('cloud-a').config.netns })).stdout;
    assert.doesNotMatch(wan, new RegExp(publicBefore.replace(/\./g, '\\.')), 'cloud-a still holds the old floating IP');
  });

  it('runs the whole VI in cloud-b only, leaving nothing in cloud-a', async () => {
    for (const name of ['kv', 'web', 'app', 'db']) await stack.assertOnlyAt('cloud-b', name);
    await stack.assertConnectionKept(kvBefore);
    const a = await stack.cloud('cloud-a').controlPlane.state.read();
    assert.deepEqual(Object.keys(a.networks), ['vi-net'], 'the source keeps a network the VI left (vi-net stays: the clients are on it)');
    const links = (await run('ip', ['-o', 'link', 'show'], { netns: stack.cloud('cloud-a').config.netns })).stdout;
    assert.doesNotMatch(links, /br-db-net|vx-db-net/);
  });

  it('enforces the web server\'s rules at the destination too: its clients pass, another container is dropped', async () => {
    const get = (fromPort: string) =>
      run('busybox', ['sh', '-c', `printf "GET / HTTP/1.0\\r\\n\\r\\n" | timeout 3 busybox nc -w 2 ${WEB_IP} 80`], { netns: stack.cloud(fromPort === 'client' ? 'cloud-a' : 'cloud-b').controlPlane.portNetns(fromPort), allowFailure: true });
    assert.match((await get('client')).stdout, /^HTTP\/1\.1 200 OK/, 'the allowed client was refused');
    const intruder = await get('kv'); // kv (192.0.2.10) is not in web's rules
    assert.equal(intruder.stdout, '', 'a connection the rules forbid was answered');
    const rules = await run('nft', ['list', 'table', 'inet', 'migravi_rules'], { netns: stack.cloud('cloud-b').controlPlane.portNetns('web') });
    assert.match(rules.stdout, /ip saddr 192\.0\.2\.100 tcp dport 80 accept/);
  });

  it('lists what each cloud hosts, from that cloud\'s worker: the VI now in cloud-b, nothing of it in cloud-a', async () => {
    const b = await describeCloud(stack.temporal, 'cloud-b');
    assert.deepEqual(b.containers.map((c) => [c.vi, c.name, c.addresses, c.status]), [
      ['demo', 'app', ['vi-net:192.0.2.30', 'db-net:10.88.0.10'], 'running'],
      ['demo', 'db', ['db-net:10.88.0.20'], 'running'],
      ['demo', 'kv', ['vi-net:192.0.2.10'], 'running'],
      ['demo', 'web', ['vi-net:192.0.2.20'], 'running'],
    ]);
    // vi-net stays stretched (the clients, in cloud-a, are on it); db-net was released at the source.
    assert.deepEqual(b.networks.map((n) => [n.name, n.stretchedTo]), [['db-net', []], ['vi-net', [stack.cloud('cloud-a').config.publicIp]]]);
    assert.deepEqual((await describeCloud(stack.temporal, 'cloud-a')).containers, []);
    // The same through the command line.
    const cli = await run(process.execPath, [path.join(__dirname, '..', '..', 'client', 'cli.js'), 'list', 'cloud-b', '--temporal', '127.0.0.1:7243']);
    assert.match(cli.stdout, /network vi-net 192\.0\.2\.0\/24 \(VI demo\) stretched to /);
    assert.match(cli.stdout, /demo +web +running +vi-net:192\.0\.2\.20/);
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
    assert.deepEqual(report.groups.map((g) => g.containers), [['app', 'db', 'kv', 'web']]);
    for (const c of report.containers) assert.ok(c.frozenMs > 0 && c.frozenMs <= report.groups[0]!.frozenMs);
  });

  it('removes the VI with its public name: the name no longer resolves, the floating IP is released', async () => {
    const removed = await removeVi(stack.temporal, 'cloud-b', DEMO_VI, { deleteVolumes: true });
    assert.deepEqual(removed.containers.sort(), ['app', 'db', 'kv', 'web']);
    assert.deepEqual(await resolveFromOutside(stack.record, 'www.vi.example.'), []);
    assert.deepEqual(await stack.cloud('cloud-b').controlPlane.floatingIps(), []);
  });
});
