/**
 * A user's VI file deployed into a cloud through its worker (CLI and client API): two networks, a
 * container on both, environment, working directory, a non-root user, a volume, network-wide and
 * container rules. Checked against what the kernel, the runtime and the volume's files show; a
 * repeated deploy changes nothing; conflicts are refused before anything changes; removal leaves
 * nothing behind.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { chown, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import YAML from 'yaml';
import { deployVi, describeCloud, removeVi, startMigration } from '../../client/migravi-client';
import type { MigrationReport } from '../../lib/types';
import { run } from '../../lib/exec';
import { demoRootfs } from '../../lib/paths';
import type { ViSpecInput } from '../../lib/vi-spec';
import { E2eStack } from './stack';

/** Every message down a failure's cause chain (workflow → activity → the cloud's own error). */
function causes(err: unknown): string {
  const messages: string[] = [];
  for (let e = err as Error | undefined; e; e = e.cause as Error | undefined) messages.push(e.message);
  return messages.join('\n');
}

const cli = path.join(__dirname, '..', '..', 'client', 'cli.js');

/** A three-container VI on two networks; app sits on both and runs as nobody with a volume. */
function shop(volumeDir: string, webRootfsTarball: string): ViSpecInput {
  const echo = (port: number) => `busybox nc -ll -p ${port} -e /bin/cat`;
  return {
    name: 'shop',
    networks: [
      // Network-wide: anything on front may reach port 9000 of front's containers.
      { name: 'front', cidr: '10.20.1.0/24', ingress: [{ port: 9000, from: '10.20.1.0/24' }] },
      { name: 'back', cidr: '10.20.2.0/24' },
    ],
    containers: [
      // Its root filesystem is a tarball (the others' are directories).
      { name: 'web', rootfs: webRootfsTarball, command: ['/bin/sh', '-c', 'exec busybox sleep 100000'], readonlyRootfs: true, networks: [{ network: 'front' }] },
      {
        name: 'app',
        rootfs: demoRootfs,
        command: ['/bin/sh', '-c', `busybox id -u > uid; busybox pwd > cwd; echo "$GREETING" > env; ${echo(9001)} & exec ${echo(9000)}`],
        env: { GREETING: 'hello from the VI file' },
        workdir: '/srv/data',
        user: '65534:65534',
        readonlyRootfs: true,
        networks: [{ network: 'front' }, { network: 'back', ip: '10.20.2.50' }],
        volumes: [{ source: volumeDir, target: '/srv/data' }],
        // Its own rule: the back network may reach 9000 too. 9001 is allowed to nobody.
        ingress: [{ port: 9000, from: '10.20.2.0/24' }],
      },
      { name: 'db', rootfs: demoRootfs, command: ['/bin/kv-server', '7000', '0'], readonlyRootfs: true, networks: [{ network: 'back' }] },
    ],
  };
}

describe('a VI file deployed through the cloud\'s worker: networks, addresses, environment, user, volume, rules', function () {
  this.timeout(300_000);
  let stack: E2eStack;
  let viFile: string;
  let volumeDir: string;
  let tarball: string;

  before(async () => {
    stack = await E2eStack.start({ id: 'mvvi', ballastMiB: 0 }); // runs the demo VI (kv on vi-net) too
    volumeDir = path.join(stack.tmp, 'volumes', 'app');
    viFile = path.join(stack.tmp, 'shop.vi.yaml');
    tarball = path.join(stack.tmp, 'busybox-rootfs.tar.gz');
    await run('tar', ['-czf', tarball, '-C', demoRootfs, '.']);
    await writeFile(viFile, YAML.stringify(shop(volumeDir, tarball)));
    // Data already in the volume when the VI is deployed: 24 MiB that nothing writes afterwards.
    await mkdir(path.join(volumeDir, 'static'), { recursive: true });
    await run('dd', ['if=/dev/urandom', `of=${path.join(volumeDir, 'static', 'blob')}`, 'bs=1M', 'count=24', 'status=none']);
    await writeFile(path.join(volumeDir, 'static', 'note'), 'kept across clouds\n');
    await chown(volumeDir, 65534, 65534);
  });

  after(async function () {
    const unhappy = this.test?.parent?.tests.some((t) => t.state !== 'passed') ?? true;
    await stack?.stop(unhappy);
  });

  const netnsOf = (container: string) => stack.cloud('cloud-a').controlPlane.portNetns(container);
  const send = (from: string, ip: string, port: number) =>
    run('busybox', ['sh', '-c', `echo ping | timeout 3 busybox nc -w 2 ${ip} ${port}`], { netns: netnsOf(from), allowFailure: true }).then((r) => r.stdout.trim());

  it('deploys from the file with the CLI, allocating the addresses it does not fix', async () => {
    const out = await run(process.execPath, [cli, 'deploy', 'cloud-a', viFile, '--temporal', '127.0.0.1:7243']);
    assert.match(out.stdout, /web +started +front:10\.20\.1\.10/);
    assert.match(out.stdout, /app +started +front:10\.20\.1\.11 back:10\.20\.2\.50/);
    assert.match(out.stdout, /db +started +back:10\.20\.2\.10/);
    for (const name of ['web', 'app', 'db']) assert.equal(await stack.cloud('cloud-a').runtime.status(name), 'running');
  });

  it('gives the container on two networks one interface on each, with the recorded addresses and MACs', async () => {
    const spec = (await stack.cloud('cloud-a').controlPlane.listContainers()).app!;
    const { stdout } = await run('ip', ['-j', 'addr', 'show'], { netns: netnsOf('app') });
    const links = (JSON.parse(stdout) as Array<{ ifname: string; address: string; addr_info: Array<{ local: string }> }>).filter((l) => l.ifname !== 'lo');
    assert.deepEqual(
      links.map((l) => [l.ifname, l.address, l.addr_info.map((a) => a.local)]),
      spec.interfaces.map((i, n) => [`eth${n}`, i.mac, [i.ip]]),
    );
    assert.deepEqual(spec.interfaces.map((i) => i.network), ['front', 'back']);
  });

  it('runs the program as the declared user, in its working directory, with its environment, writing into its volume', async () => {
    // The container wrote these itself into the host directory of its volume.
    assert.equal(readFileSync(path.join(volumeDir, 'uid'), 'utf8').trim(), '65534');
    assert.equal(readFileSync(path.join(volumeDir, 'cwd'), 'utf8').trim(), '/srv/data');
    assert.equal(readFileSync(path.join(volumeDir, 'env'), 'utf8').trim(), 'hello from the VI file');
  });

  it('enforces the network\'s rule on its interface and the container\'s own rule; anything else is dropped', async () => {
    assert.equal(await send('web', '10.20.1.11', 9000), 'ping', 'front → app:9000 (network rule) was refused');
    assert.equal(await send('db', '10.20.2.50', 9000), 'ping', 'back → app:9000 (container rule) was refused');
    assert.equal(await send('web', '10.20.1.11', 9001), '', 'front → app:9001 (no rule) was answered');
    assert.equal(await send('app', '10.20.1.11', 9001), 'ping', 'app does not listen on 9001 (the drop above proves nothing)');
  });

  it('keeps VIs apart: the cloud routes nothing from this VI\'s networks to another VI\'s (the demo\'s kv), which its own clients reach', async () => {
    const incr = (from: string) =>
      run('busybox', ['sh', '-c', 'printf "INCR\\n" | timeout 3 busybox nc -w 2 192.0.2.10 7000'], { netns: netnsOf(from), allowFailure: true }).then((r) => r.stdout.trim());
    assert.equal(await incr('db'), '', 'a container of another VI reached kv through the edge');
    assert.match(await incr('client'), /^\d+$/, 'kv does not answer its own VI\'s client (the refusal above proves nothing)');
  });

  it('changes nothing when the same file is deployed again (client API)', async () => {
    const before = await describeCloud(stack.temporal, 'cloud-a');
    const pid = (await stack.cloud('cloud-a').controlPlane.listContainers()).app && (await run('runc', ['--root', path.join(stack.cloud('cloud-a').config.dir, 'runc'), 'state', 'app'])).stdout;
    const again = await deployVi(stack.temporal, 'cloud-a', shop(volumeDir, tarball));
    assert.deepEqual([again.started, again.unchanged, again.networksCreated], [[], ['web', 'app', 'db'], []]);
    assert.deepEqual(await describeCloud(stack.temporal, 'cloud-a'), before);
    const pidAfter = (await run('runc', ['--root', path.join(stack.cloud('cloud-a').config.dir, 'runc'), 'state', 'app'])).stdout;
    assert.equal(JSON.parse(pidAfter).pid, JSON.parse(pid as string).pid, 'app was restarted');
  });

  it('refuses conflicts before touching anything: a name, an overlapping subnet, a taken address, another VI\'s network', async () => {
    const before = await describeCloud(stack.temporal, 'cloud-a');
    const stateBefore = await readFile(path.join(stack.cloud('cloud-a').config.dir, 'state.json'), 'utf8');
    const other: ViSpecInput = {
      name: 'other',
      networks: [
        { name: 'side', cidr: '10.20.1.128/25' }, // inside front
        { name: 'back', cidr: '10.20.2.0/24' }, // shop's
      ],
      containers: [
        { name: 'kv', rootfs: demoRootfs, command: ['/bin/sh'], networks: [{ network: 'side' }] }, // the demo VI's
        { name: 'fresh', rootfs: demoRootfs, command: ['/bin/sh'], networks: [{ network: 'back', ip: '10.20.2.50' }] }, // app's
        { name: 'lost', rootfs: '/nonexistent/rootfs', command: ['/bin/sh'], networks: [{ network: 'side' }] },
        { name: 'twin', rootfs: demoRootfs, command: ['/bin/sh'], networks: [{ network: 'side', mac: '02:00:c0:00:02:0a' }] }, // kv's MAC
        { name: 'pub', rootfs: demoRootfs, command: ['/bin/sh'], networks: [{ network: 'side' }], floatingIp: { address: '198.51.100.7' } }, // not cloud-a's
      ],
    };
    const refusal = await deployVi(stack.temporal, 'cloud-a', other).then(
      () => assert.fail('a conflicting VI was deployed'),
      (err: Error) => causes(err),
    );
    assert.match(refusal, /network back already exists in cloud-a for VI shop/);
    assert.match(refusal, /networks\.side: 10\.20\.1\.128\/25 overlaps front \(10\.20\.1\.0\/24\)/);
    assert.match(refusal, /a container named kv already exists in cloud-a \(VI demo\)/);
    assert.match(refusal, /containers\.fresh: 10\.20\.2\.50 on back is already app's/);
    assert.match(refusal, /containers\.lost\.rootfs: \/nonexistent\/rootfs does not exist/);
    assert.match(refusal, /containers\.twin: MAC 02:00:c0:00:02:0a is already kv's in cloud-a/);
    assert.match(refusal, /containers\.pub\.floatingIp\.address: 198\.51\.100\.7 is outside cloud-a's floating-IP range 203\.0\.113\.160\/28/);
    assert.deepEqual(await describeCloud(stack.temporal, 'cloud-a'), before);
    assert.equal(await readFile(path.join(stack.cloud('cloud-a').config.dir, 'state.json'), 'utf8'), stateBefore, 'the cloud\'s state changed');
    assert.equal(await stack.cloud('cloud-a').runtime.status('fresh'), 'absent');
  });

  it('refuses a public name in a zone the DNS cloud does not serve, before deploying anything', async () => {
    const named: ViSpecInput = {
      name: 'named',
      networks: [{ name: 'pub', cidr: '10.30.0.0/24' }],
      containers: [{ name: 'site', rootfs: demoRootfs, command: ['/bin/sh'], networks: [{ network: 'pub' }], floatingIp: {} }],
      dns: { zone: 'nowhere.example.', cloud: 'cloud-a', records: [{ name: 'www', container: 'site' }] },
    };
    const refusal = await deployVi(stack.temporal, 'cloud-a', named).then(
      () => assert.fail('a VI with a zone nobody serves was deployed'),
      (err: Error) => causes(err),
    );
    assert.match(refusal, /dns\.zone: nowhere\.example\. is not served by cloud-a's DNS \(it serves: vi\.example\.\)/);
    assert.equal(await stack.cloud('cloud-a').runtime.status('site'), 'absent');
    assert.equal((await stack.cloud('cloud-a').controlPlane.listNetworks()).find((n) => n.name === 'pub'), undefined);
  });

  let digestsAtSource: Record<string, string>;
  let finalReport: MigrationReport;

  it('moves a part of the VI (db): the split VI keeps working over the stretched network', async () => {
    digestsAtSource = await treeDigests(volumeDir);
    // With the CLI, for a script: one JSON document on stdout, the progress on stderr, exit 0.
    const planFile = path.join(stack.tmp, 'shop-part.plan.yaml');
    await writeFile(planFile, YAML.stringify({ name: 'shop-part', vi: 'shop', containers: ['db'], source: 'cloud-a', destination: 'cloud-b' }));
    const out = await run(process.execPath, [cli, 'migrate', planFile, '--json', '--temporal', '127.0.0.1:7243'], { allowFailure: true });
    assert.equal(out.exitCode, 0, out.stderr);
    assert.match(out.stderr, /started migrate-shop-part-/);
    const { report } = JSON.parse(out.stdout) as { workflowId: string; report: MigrationReport };
    assert.deepEqual(report.containers.map((c) => c.name), ['db']);
    assert.equal(await stack.cloud('cloud-b').runtime.status('db'), 'running');
    assert.equal(await stack.cloud('cloud-a').runtime.status('db'), 'absent');
    // app (cloud-a) → db (cloud-b) on back: the kv-server answers across the clouds.
    const reply = await run('busybox', ['sh', '-c', 'printf "INCR\\n" | timeout 3 busybox nc -w 2 10.20.2.10 7000'], { netns: netnsOf('app'), allowFailure: true });
    if (reply.stdout.trim() !== '1') {
      // Seen once in CI (not reproduced since): what each side's network knew at that moment.
      const look = async (argv: string[], netns: string) => (await run(argv[0]!, argv.slice(1), { netns, allowFailure: true })).stdout.trim();
      const diagnosis = [
        `nc: ${JSON.stringify(reply)}`,
        `app's neighbours: ${await look(['ip', 'neigh'], netnsOf('app'))}`,
        `cloud-a's bridge: ${await look(['bridge', 'fdb', 'show'], stack.cloud('cloud-a').config.netns)}`,
        `cloud-b's bridge: ${await look(['bridge', 'fdb', 'show'], stack.cloud('cloud-b').config.netns)}`,
        `db's port at cloud-b: ${await look(['ip', '-br', 'addr'], stack.cloud('cloud-b').controlPlane.portNetns('db'))}; ${await look(['nft', 'list', 'ruleset'], stack.cloud('cloud-b').controlPlane.portNetns('db'))}`,
        `report: ${JSON.stringify({ warnings: report.warnings, events: report.events })}`,
      ];
      assert.fail(`app cannot reach db in the other cloud\n${diagnosis.join('\n')}`);
    }
    const listing = await describeCloud(stack.temporal, 'cloud-a');
    // Only the network db is on is stretched (and kept: app still uses it here).
    assert.deepEqual(listing.networks.filter((n) => n.vi === 'shop').map((n) => [n.name, n.stretchedTo]), [['back', [stack.cloud('cloud-b').config.publicIp]], ['front', []]]);
  });

  it('rolls the move back when a volume round arrives corrupt inside the freeze: the VI runs at the source, its volume untouched, nothing of it at the destination', async () => {
    await stack.setFaults([{ process: 'cloud-a', at: 'volumes:final', action: 'corrupt' }]);
    // With the CLI: a migration that failed and rolled back exits 3, saying why and where the VI runs.
    const planFile = path.join(stack.tmp, 'shop-corrupt.plan.yaml');
    await writeFile(planFile, YAML.stringify({ name: 'shop-corrupt', vi: 'shop', source: 'cloud-a', destination: 'cloud-b' }));
    const out = await run(process.execPath, [cli, 'migrate', planFile, '--temporal', '127.0.0.1:7243'], { allowFailure: true });
    await stack.setFaults([]);
    assert.equal(out.exitCode, 3, `${out.stdout}\n${out.stderr}`);
    assert.match(out.stderr, /migravi: migration shop-corrupt failed: /);
    assert.match(out.stderr, /volume 0 \(final\) arrived corrupt/);
    assert.match(out.stderr, /rolled back: the VI runs at the source/);
    const a = stack.cloud('cloud-a');
    const b = stack.cloud('cloud-b');
    for (const name of ['web', 'app']) {
      assert.equal(await a.runtime.status(name), 'running', `${name} does not run at the source after the rollback`);
      assert.equal(await b.runtime.status(name), 'absent');
      assert.ok(!existsSync(b.runtime.bundleDir(name)), `${name}'s bundle is left at the destination`);
    }
    assert.ok(!existsSync(path.join(b.volumesDir, 'app')), 'the volume copy is left at the destination');
    assert.deepEqual(await treeDigests(volumeDir), digestsAtSource, 'the volume changed at the source');
    assert.equal(await send('web', '10.20.1.11', 9000), 'ping', 'app does not answer at the source after the rollback');
  });

  it('moves the rest of the VI by its name, the destination worker killed inside the final volume round; the volume moved live: everything before the freeze, nothing inside it', async () => {
    await stack.setFaults([{ process: 'cloud-b', at: 'receiveVolumes:final', action: 'kill' }]);
    finalReport = await (await startMigration(stack.temporal, { name: 'shop-rest', vi: 'shop', source: 'cloud-a', destination: 'cloud-b' })).result();
    assert.deepEqual(await stack.firedFaults(), ['f0']);
    await stack.setFaults([]);
    assert.ok(stack.restarts.includes('cloud-b'), 'the destination worker was not restarted');
    assert.deepEqual(finalReport.containers.map((c) => c.name).sort(), ['app', 'web']);
    const app = finalReport.containers.find((c) => c.name === 'app')!;
    assert.ok(app.volumes, 'no volume report for app');
    // The destination's own count of what it unpacked and re-hashed in each round.
    const volumeChecks = app.checks.filter((c) => c.kind === 'volume');
    assert.equal(volumeChecks.length, 2, 'expected a pre round and a final round');
    assert.ok(volumeChecks[0]!.verifiedBytes >= 24 << 20, `pre round verified ${volumeChecks[0]!.verifiedBytes} bytes`);
    assert.equal(volumeChecks[1]!.verifiedBytes, 0, 'file content was sent inside the freeze though nothing wrote to the volume');
  });

  it('has the volume\'s files identical at the destination (digests recomputed at rest on both sides)', async () => {
    const spec = (await stack.cloud('cloud-b').controlPlane.listContainers()).app!;
    const there = spec.volumes![0]!.source;
    assert.notEqual(there, volumeDir);
    assert.deepEqual(await treeDigests(there), digestsAtSource);
    // ... and the container uses it: it answers, and the file it wrote is the one it reads.
    assert.equal(await run('runc', ['--root', path.join(stack.cloud('cloud-b').config.dir, 'runc'), 'exec', 'app', 'busybox', 'cat', '/srv/data/static/note']).then((r) => r.stdout), 'kept across clouds\n');
  });

  it('keeps addresses, MACs and rules at the destination, and leaves nothing of the VI at the source', async () => {
    const b = stack.cloud('cloud-b');
    const spec = (await b.controlPlane.listContainers()).app!;
    const { stdout } = await run('ip', ['-j', 'addr', 'show'], { netns: b.controlPlane.portNetns('app') });
    const links = (JSON.parse(stdout) as Array<{ ifname: string; address: string; addr_info: Array<{ local: string }> }>).filter((l) => l.ifname !== 'lo');
    assert.deepEqual(links.map((l) => [l.ifname, l.address, l.addr_info.map((a) => a.local)]), spec.interfaces.map((i, n) => [`eth${n}`, i.mac, [i.ip]]));
    const sendB = (from: string, ip: string, port: number) =>
      run('busybox', ['sh', '-c', `echo ping | timeout 3 busybox nc -w 2 ${ip} ${port}`], { netns: b.controlPlane.portNetns(from), allowFailure: true }).then((r) => r.stdout.trim());
    assert.equal(await sendB('web', '10.20.1.11', 9000), 'ping');
    assert.equal(await sendB('web', '10.20.1.11', 9001), '', 'a connection the rules forbid was answered at the destination');
    const a = stack.cloud('cloud-a');
    // Placement, registries, ports, bundles, guards, and no migration file or claim left on either side.
    for (const name of ['web', 'app', 'db']) await stack.assertOnlyAt('cloud-b', name);
    const links_a = (await run('ip', ['-o', 'link', 'show'], { netns: a.config.netns })).stdout;
    assert.doesNotMatch(links_a, /br-front|br-back|vx-front|vx-back/, 'the VI\'s bridges or tunnels are left at the source');
    assert.deepEqual(Object.keys((await a.controlPlane.state.read()).networks), ['vi-net'], 'the source still records the VI\'s networks');
    assert.ok(!existsSync(volumeDir), 'the volume\'s files are left at the source');
    const bNets = (await describeCloud(stack.temporal, 'cloud-b')).networks.filter((n) => n.vi === 'shop');
    assert.deepEqual(bNets.map((n) => [n.name, n.stretchedTo]), [['back', []], ['front', []]], 'the stretch was not removed at the destination');
  });

  it('removes the VI from its new cloud: no process, port, bridge, rule or record of it is left; the demo VI keeps running', async () => {
    const b = stack.cloud('cloud-b');
    const there = (await b.controlPlane.listContainers()).app!.volumes![0]!.source;
    const out = await run(process.execPath, [cli, 'remove', 'cloud-b', 'shop', '--delete-volumes', '--temporal', '127.0.0.1:7243']);
    assert.match(out.stdout, /removed VI shop from cloud-b: containers \w+, \w+, \w+; networks back, front/);
    for (const name of ['web', 'app', 'db']) {
      assert.equal(await b.runtime.status(name), 'absent');
      assert.ok(!existsSync(`/run/netns/${b.controlPlane.portNetns(name)}`), `${name}'s port namespace is left`);
      assert.ok(!existsSync(b.runtime.bundleDir(name)), `${name}'s bundle is left`);
    }
    const links = (await run('ip', ['-o', 'link', 'show'], { netns: b.config.netns })).stdout;
    assert.doesNotMatch(links, /br-front|br-back|v-app|v1-app|v-web|v-db/);
    const state = await b.controlPlane.state.read();
    assert.deepEqual([Object.keys(state.networks), Object.keys(state.containers), Object.keys(state.ports)], [[], [], []]);
    assert.ok(!existsSync(there), 'the volume was kept despite --delete-volumes');
    assert.equal(await stack.cloud('cloud-a').runtime.status('kv'), 'running');
    await assert.rejects(removeVi(stack.temporal, 'cloud-b', 'shop'), (err: Error) => /no VI "shop" in cloud-b/.test(causes(err)));
  });
});

/** sha256 of every regular file under a directory, by relative path, read now from disk. */
async function treeDigests(dir: string): Promise<Record<string, string>> {
  const { stdout } = await run('sh', ['-c', 'find . -type f -print0 | sort -z | xargs -0 -r sha256sum'], { cwd: dir });
  return Object.fromEntries(stdout.trim().split('\n').filter(Boolean).map((line) => [line.slice(66), line.slice(0, 64)]));
}
