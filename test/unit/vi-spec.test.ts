import assert from 'node:assert/strict';
import path from 'node:path';
import { networkVni, specsOf } from '../../activities/deploy-vi';
import { demoRootfs, nginxRootfs, postgresRootfs } from '../../lib/paths';
import { loadViFile } from '../../lib/vi-file';
import { allocateAddresses, parseViSpec, ViSpecError, type ViSpecInput } from '../../lib/vi-spec';

/** A three-tier VI on two networks, as a user would write it. */
const shop = (): ViSpecInput => ({
  name: 'shop',
  networks: [
    { name: 'front', cidr: '10.10.1.0/24', ingress: [{ port: 80 }] },
    { name: 'back', cidr: '10.10.2.0/24' },
  ],
  containers: [
    { name: 'web', rootfs: '/srv/images/nginx', command: ['/usr/sbin/nginx', '-g', 'daemon off;'], networks: [{ network: 'front', ip: '10.10.1.10' }, { network: 'back' }] },
    { name: 'app', rootfs: '/srv/images/app.tar.gz', command: ['/app/server'], env: { DB_HOST: '10.10.2.30' }, networks: [{ network: 'back' }] },
    {
      name: 'db',
      rootfs: '/srv/images/postgres',
      command: ['/usr/lib/postgresql/15/bin/postgres', '-D', '/var/lib/postgresql/data'],
      workdir: '/var/lib/postgresql',
      networks: [{ network: 'back', ip: '10.10.2.30', mac: '02:00:0a:0a:02:1e' }],
      volumes: [{ source: '/srv/volumes/shop-db', target: '/var/lib/postgresql/data' }],
      ingress: [{ port: 5432, from: '10.10.2.0/24' }],
    },
  ],
});

/** The problems a VI is refused with (the assertion fails if it is accepted). */
function problemsOf(input: unknown): string[] {
  try {
    parseViSpec(input);
  } catch (err) {
    assert.ok(err instanceof ViSpecError, String(err));
    return err.problems;
  }
  assert.fail('the VI description was accepted');
}

describe('VI description', () => {
  it('accepts a multi-tier VI and fills in the defaults', () => {
    const vi = parseViSpec(shop());
    const web = vi.containers[0]!;
    assert.equal(web.workdir, '/');
    assert.deepEqual(web.env, {});
    assert.deepEqual(web.volumes, []);
    assert.equal(web.readonlyRootfs, false);
    assert.equal(vi.networks[0]!.mtu, 1390);
    assert.deepEqual(vi.networks[0]!.ingress, [{ port: 80, protocol: 'tcp', from: '0.0.0.0/0' }]);
    assert.equal(vi.containers[2]!.volumes[0]!.readOnly, false);
  });

  it('names every problem by its field', () => {
    const bad = shop() as { networks: Array<Record<string, unknown>>; containers: Array<Record<string, unknown>> };
    bad.networks.push({ name: 'dup', cidr: '10.10.1.128/25' }); // overlaps front
    bad.networks.push({ name: 'hosty', cidr: '10.20.0.5/16' });
    const [web, app, db] = bad.containers as [Record<string, unknown>, Record<string, unknown>, Record<string, unknown>];
    web.networks = [{ network: 'front', ip: '10.10.9.9' }, { network: 'nowhere' }, { network: 'front' }];
    app.name = 'App!';
    db.networks = [{ network: 'back', ip: '10.10.2.255', mac: '03:00:00:00:00:01' }];
    db.volumes = [{ source: 'relative/dir', target: '/' }, { source: '/a', target: '/data' }, { source: '/b', target: '/data' }];
    db.ingress = [{ port: '9000-8000', from: '10.10.2.1/24' }];
    bad.containers.push({ name: 'db', rootfs: '/x', command: [], networks: [] });
    const text = problemsOf(bad).join('\n');
    for (const expected of [
      /^networks\.2\.cidr: 10\.10\.1\.128\/25 overlaps network "front"$/m,
      /^networks\.3\.cidr: 10\.20\.0\.5\/16 has host bits set \(the network is 10\.20\.0\.0\/16\)$/m,
      /^containers\.0\.networks\.0\.ip: 10\.10\.9\.9 is not in front \(10\.10\.1\.0\/24\)$/m,
      /^containers\.0\.networks\.1\.network: no network "nowhere" in this VI/m,
      /^containers\.0\.networks\.2\.network: web is attached to "front" twice$/m,
      /^containers\.1\.name: a container name is 1-12 characters/m,
      /^containers\.2\.networks\.0\.ip: 10\.10\.2\.255 is the network or broadcast address of back$/m,
      /^containers\.2\.networks\.0\.mac: a unicast MAC address/m,
      /^containers\.2\.volumes\.0\.source: an absolute path/m,
      /^containers\.2\.volumes\.0\.target: a volume cannot be mounted on \/$/m,
      /^containers\.2\.volumes\.2\.target: two volumes are mounted on \/data$/m,
      /^containers\.2\.ingress\.0\.port: 9000-8000 is not a port range/m,
      /^containers\.2\.ingress\.0\.from: 10\.10\.2\.1\/24 has host bits set$/m,
      /^containers\.3\.command: the command names at least the program to run$/m,
      /^containers\.3\.networks: a container is attached to at least one network$/m,
    ]) {
      assert.match(text, expected);
    }
  });

  it('refuses two containers with one address, one MAC or one name', () => {
    const vi = shop() as { containers: Array<Record<string, unknown>> };
    vi.containers[1]!.networks = [{ network: 'back', ip: '10.10.2.30', mac: '02:00:0a:0a:02:1e' }];
    vi.containers[1]!.name = 'db';
    const text = problemsOf(vi).join('\n');
    assert.match(text, /containers\.2\.name: container "db" is declared twice/);
    assert.match(text, /containers\.2\.networks\.0\.ip: 10\.10\.2\.30 is already db's address on back/);
    assert.match(text, /containers\.2\.networks\.0\.mac: 02:00:0a:0a:02:1e is already db's MAC/);
  });

  it('refuses unknown fields and an empty VI', () => {
    assert.match(problemsOf({ ...shop(), extra: 1 }).join('\n'), /Unrecognized key.*extra/);
    const text = problemsOf({ name: 'e', networks: [], containers: [] }).join('\n');
    assert.match(text, /networks: a VI has at least one private network/);
    assert.match(text, /containers: a VI has at least one container/);
  });

  it('allocates the missing addresses from .10 up, keeps fixed ones, avoids those taken, and is stable', () => {
    const vi = parseViSpec(shop());
    const used = { back: { ips: new Set(['10.10.2.10']), macs: new Set<string>() } };
    const allocated = allocateAddresses(vi, used);
    const addr = (c: number, n: number) => allocated.containers[c]!.networks[n]!;
    assert.equal(addr(0, 0).ip, '10.10.1.10'); // fixed
    assert.equal(addr(0, 1).ip, '10.10.2.11'); // .10 is taken in the cloud
    assert.equal(addr(1, 0).ip, '10.10.2.12');
    assert.equal(addr(2, 0).ip, '10.10.2.30'); // fixed
    assert.equal(addr(2, 0).mac, '02:00:0a:0a:02:1e'); // fixed
    const macs = allocated.containers.flatMap((c) => c.networks.map((a) => a.mac!));
    assert.equal(new Set(macs).size, macs.length, `MACs repeat: ${macs.join(' ')}`);
    for (const m of macs) assert.equal(parseInt(m.slice(0, 2), 16) & 3, 2, `${m} is not a locally administered unicast MAC`);
    assert.deepEqual(allocateAddresses(vi, used), allocated, 'a second allocation gave other addresses');
    assert.equal(vi.containers[1]!.networks[0]!.ip, undefined, 'the input was changed');
  });

  it('says when a network has no address left', () => {
    const vi = parseViSpec({
      name: 'tiny',
      networks: [{ name: 'n', cidr: '10.0.0.0/29' }],
      containers: ['a', 'b', 'c', 'd', 'e', 'f', 'g'].map((name) => ({ name, rootfs: '/r', command: ['/x'], networks: [{ network: 'n' }] })),
    });
    assert.throws(() => allocateAddresses(vi), /network n \(10\.0\.0\.0\/29\) has no free address left for g/);
  });

  it('turns a VI into the cloud\'s specs: interfaces in order, environment, user, volumes, network rules on their interface', () => {
    const vi = allocateAddresses(
      parseViSpec({
        name: 'shop',
        networks: [
          { name: 'front', cidr: '10.10.1.0/24', ingress: [{ port: 80, from: '10.10.1.0/24' }] },
          { name: 'back', cidr: '10.10.2.0/24' },
        ],
        containers: [
          { name: 'app', rootfs: '/r', command: ['/app'], env: { MODE: 'prod' }, user: '101', workdir: '/srv', networks: [{ network: 'front' }, { network: 'back' }], volumes: [{ source: '/data/app', target: '/srv/data' }], ingress: [{ port: 9000, from: '10.10.2.0/24' }] },
          { name: 'db', rootfs: '/r', command: ['/db'], networks: [{ network: 'back' }] },
        ],
      }),
    );
    const { networks, containers } = specsOf(vi, { front: 11, back: 12 });
    assert.deepEqual(networks.map((n) => [n.name, n.vni, n.vi]), [['front', 11, 'shop'], ['back', 12, 'shop']]);
    const [app, db] = containers.map((c) => c.spec);
    assert.deepEqual(app!.interfaces.map((i) => [i.network, i.ip]), [['front', '10.10.1.10'], ['back', '10.10.2.10']]);
    assert.deepEqual(app!.env, ['MODE=prod']);
    assert.deepEqual(app!.user, { uid: 101, gid: 101 });
    assert.equal(app!.cwd, '/srv');
    assert.deepEqual(app!.volumes, [{ source: '/data/app', target: '/srv/data', readOnly: false }]);
    assert.deepEqual(app!.ingress, [
      { port: 9000, protocol: 'tcp', from: '10.10.2.0/24' },
      { port: 80, protocol: 'tcp', from: '10.10.1.0/24', network: 'front' },
    ]);
    assert.equal(db!.ingress, undefined, 'a container on a network without rules, with none of its own, is not filtered');
  });

  it('derives the same VXLAN id for a VI\'s network in every cloud, different for different networks', () => {
    assert.equal(networkVni('shop', 'front'), networkVni('shop', 'front'));
    assert.notEqual(networkVni('shop', 'front'), networkVni('shop', 'back'));
    assert.ok(networkVni('shop', 'front') >= 1 && networkVni('shop', 'front') < 2 ** 24);
  });

  it('checks the VI\'s public names: in its zone, once each, on a container with a public address', () => {
    const vi = (records: Array<{ name: string; container: string }>, floating = true): ViSpecInput => ({
      name: 'pub',
      networks: [{ name: 'n', cidr: '10.0.0.0/24' }],
      containers: [
        { name: 'web', rootfs: '/r', command: ['/x'], networks: [{ network: 'n' }], ...(floating ? { floatingIp: {} } : {}) },
        { name: 'db', rootfs: '/r', command: ['/x'], networks: [{ network: 'n' }] },
      ],
      dns: { zone: 'vi.example', cloud: 'cloud-a', records },
    });
    assert.doesNotThrow(() => parseViSpec(vi([{ name: 'www', container: 'web' }, { name: 'api.vi.example.', container: 'web' }])));
    const text = (() => {
      try {
        parseViSpec(vi([{ name: 'www', container: 'web' }, { name: 'www.vi.example.', container: 'web' }, { name: 'www.other.example.', container: 'web' }, { name: 'db', container: 'db' }, { name: 'x', container: 'nope' }]));
        return '';
      } catch (err) {
        return (err as Error).message;
      }
    })();
    assert.match(text, /dns\.records\.1\.name: www\.vi\.example\. is declared twice/);
    assert.match(text, /dns\.records\.2\.name: www\.other\.example\. is outside the VI's zone vi\.example\./);
    assert.match(text, /dns\.records\.3\.container: db has no floatingIp/);
    assert.match(text, /dns\.records\.4\.container: no container "nope" in this VI/);
  });

  it('reads the demo VI file, whose root filesystems are the ones setup builds', async () => {
    const vi = await loadViFile(path.join(__dirname, '..', '..', '..', 'demo', 'demo.vi.yaml'));
    assert.equal(vi.name, 'demo');
    assert.deepEqual(vi.containers.map((c) => c.rootfs), [demoRootfs, nginxRootfs, postgresRootfs, postgresRootfs]);
  });

  it('names the file and the syntax error of an unreadable VI file', async () => {
    await assert.rejects(loadViFile('/nonexistent/vi.yaml'), /cannot read VI file \/nonexistent\/vi\.yaml: ENOENT/);
  });
});
