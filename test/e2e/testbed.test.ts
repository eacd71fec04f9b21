/**
 * The embedded world must not cut the host off: a testbed adds one /30 link to the host and
 * nothing else (the WAN lives in a namespace of its own), and refuses, before creating anything,
 * ranges that collide with what the host uses. Read from the host's kernel before, during, after.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { ip, run } from '../../lib/exec';
import { criuPath, testbedsDir } from '../../lib/paths';
import { readHostNetworkFacts } from '../../providers/local/host-ranges';
import { testbedDown, testbedUp, wanNamespace, type TestbedOptions } from '../../providers/local/testbed';
import { LocalControlPlane } from '../../providers/local/control-plane';
import type { LocalCloudConfig } from '../../providers/local/cloud-config';
import { intToIp, parseCidr } from '../../lib/vi-spec';

const options = (id: string, extra: Partial<TestbedOptions> = {}): TestbedOptions => ({
  id,
  stateDir: path.join(testbedsDir, id),
  clouds: ['cloud-a', 'cloud-b'],
  wanGateway: '203.0.113.1', // the very range the host's registries answer in (PLATFORM.md)
  wanPrefixLength: 25,
  wanRateMbit: 1000,
  criuPath,
  hostLink: '198.18.0.8/30',
  ...extra,
});

const routes = async () => (await ip(['route', 'show'])).stdout.trim().split('\n').map((r) => r.trim()).sort();
const routeTo = async (address: string) => (await ip(['route', 'get', address])).stdout.split('\n')[0]!.replace(/ uid \d+.*$/, '').replace(address, 'ADDRESS').trim();

describe('the embedded world keeps off the host\'s network', function () {
  this.timeout(120_000);

  it('adds only its /30 host link to the host while up, reaches the host through it, and leaves the host as it was', async () => {
    const id = 'mvhost';
    await testbedDown(path.join(testbedsDir, id), id);
    const before = await routes();
    const registryRoute = await routeTo('203.0.113.80');
    try {
      const record = await testbedUp(options(id));
      const during = await routes();
      assert.deepEqual(during.filter((r) => !before.includes(r)), [`198.18.0.8/30 dev ${id}-up proto kernel scope link src 198.18.0.9`]);
      assert.deepEqual(before.filter((r) => !during.includes(r)), []);
      assert.equal(await routeTo('203.0.113.80'), registryRoute, 'the WAN shadows the host\'s route to its registries');
      assert.equal(await routeTo(record.clouds[0]!.publicIp), await routeTo('203.0.113.81'), 'the host routes to a cloud\'s public address');
      // A cloud reaches the host's end of the link (where Temporal listens), through the WAN's router.
      const ping = await run('busybox', ['ping', '-c', '1', '-W', '2', record.hostAddress], { netns: record.clouds[0]!.netns, allowFailure: true });
      assert.equal(ping.exitCode, 0, `cloud-a cannot reach the host at ${record.hostAddress}: ${ping.stdout}`);
    } finally {
      await testbedDown(path.join(testbedsDir, id), id);
    }
    assert.deepEqual(await routes(), before, 'the host\'s routes differ after the teardown');
    assert.ok(!existsSync(`/run/netns/${wanNamespace(id)}`));
  });

  it('refuses, before creating anything, a host link on the host\'s own address, route or resolver, and a WAN over the host link', async () => {
    const facts = await readHostNetworkFacts();
    const address = facts.addresses[0];
    assert.ok(address, 'the host has no IPv4 address to collide with');
    const aligned = (ipAddress: string) => `${intToIp(parseCidr(`${ipAddress}/30`)!.net)}/30`;
    const cases: Array<[Partial<TestbedOptions>, RegExp]> = [
      [{ hostLink: aligned(address.cidr.split('/')[0]!) }, new RegExp(`the host link \\S+ overlaps the host's address ${address.cidr.replace(/\./g, '\\.')} on ${address.dev}`)],
      [{ hostLink: '198.18.0.8/30', wanGateway: '198.18.0.1', wanPrefixLength: 24 }, /the WAN 198\.18\.0\.1\/24 overlaps the host link 198\.18\.0\.8\/30/],
    ];
    if (facts.resolvers[0]) cases.push([{ hostLink: aligned(facts.resolvers[0]) }, new RegExp(`contains the host's resolver ${facts.resolvers[0].replace(/\./g, '\\.')}`)]);
    const routed = facts.routes.find((r) => !facts.addresses.some((a) => a.dev === r.dev));
    if (routed) cases.push([{ hostLink: aligned(routed.dst.split('/')[0]!) }, /overlaps the host's route to/]);
    for (const [extra, expected] of cases) {
      const id = 'mvbad';
      await assert.rejects(testbedUp(options(id, extra)), (err: Error) => {
        assert.match(err.message, expected);
        return true;
      });
      assert.ok(!existsSync(path.join(testbedsDir, id)), 'a refused testbed left its state directory');
      assert.doesNotMatch((await ip(['netns', 'list'])).stdout, /mvbad-/, 'a refused testbed left a namespace');
    }
  });
});

describe('a stretched network', function () {
  this.timeout(120_000);

  it('gets its flood entry to the peer even when the tunnel already learned the peer\'s MACs', async () => {
    // The race seen in CI: the peer's first flood reaches a tunnel this side has just created,
    // the kernel learns a MAC "dst <peer>", and the flood entry (ARP, unknown MACs) must still be added.
    const id = 'mvstr';
    await testbedDown(path.join(testbedsDir, id), id);
    try {
      const record = await testbedUp(options(id));
      const [a, b] = record.clouds as [LocalCloudConfig, LocalCloudConfig];
      const plane = new LocalControlPlane(a);
      const network = { name: 'back', cidr: '10.9.0.0/24', vni: 4242, mtu: 1450 };
      await plane.ensureNetwork(network);
      await plane.ensureStretch(network, b.publicIp);
      // The stretch reaches b at b's end of the pair's WAN tunnel.
      const far = a.wanTunnels!['cloud-b']!.peerAddress;
      const fdb = async () => (await run('bridge', ['fdb', 'show', 'dev', 'vx-back'], { netns: a.netns })).stdout;
      await run('bridge', ['fdb', 'del', '00:00:00:00:00:00', 'dev', 'vx-back', 'dst', far], { netns: a.netns });
      await run('bridge', ['fdb', 'add', '02:42:0a:09:00:07', 'dev', 'vx-back', 'dst', far], { netns: a.netns });
      assert.doesNotMatch(await fdb(), /^00:00:00:00:00:00 /m, 'the set-up did not remove the flood entry');
      await plane.ensureStretch(network, b.publicIp);
      assert.match(await fdb(), new RegExp(`^00:00:00:00:00:00 dst ${far.replace(/\./g, '\\.')} `, 'm'), 'no flood entry to the peer');
    } finally {
      await testbedDown(path.join(testbedsDir, id), id);
    }
    assert.ok(!existsSync(`/run/netns/${wanNamespace(id)}`));
  });
});
