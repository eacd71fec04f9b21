/**
 * The stretch across the WAN, read as someone on the WAN would: a capture of a cloud's WAN link
 * while two ports of a stretched network exchange a marker, and a VXLAN frame forged from the
 * outside world. The same checks run against a plain stretch, where they must find the marker and
 * let the forgery in: the proof that the captures and the forgery can see what the tunnels hide.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { run } from '../../lib/exec';
import { criuPath, testbedsDir } from '../../lib/paths';
import { waitFor } from '../../lib/processes';
import { capture, countPackets } from './capture';
import type { ContainerSpec } from '../../lib/types';
import type { LocalCloudConfig } from '../../providers/local/cloud-config';
import { LocalControlPlane } from '../../providers/local/control-plane';
import { testbedDown, testbedUp, wanNamespace, type TestbedRecord } from '../../providers/local/testbed';

const NETWORK = { name: 'sec', cidr: '10.61.0.0/24', vni: 4300, mtu: 1450 };
const LEFT: ContainerSpec = { name: 'left', interfaces: [{ network: 'sec', ip: '10.61.0.10', mac: '02:61:00:00:00:0a' }], args: [], readonlyRootfs: false };
const RIGHT: ContainerSpec = { name: 'right', interfaces: [{ network: 'sec', ip: '10.61.0.11', mac: '02:61:00:00:00:0b' }], args: [], readonlyRootfs: false };
const PORT = 7000;

/** `text` sent over TCP from the left port (cloud-a) to the right one (cloud-b); resolves with what the right one received. */
async function sendAcross(record: TestbedRecord, text: string): Promise<string> {
  const [a, b] = record.clouds as [LocalCloudConfig, LocalCloudConfig];
  // A receiver of its own: busybox nc half-closes on its empty input, which can end the sender early.
  const receiver = `const server = require('node:net').createServer((s) => { s.pipe(process.stdout); s.on('end', () => server.close()); }).listen(${PORT});
    setTimeout(() => process.exit(3), 20000).unref();`;
  const received = run(process.execPath, ['-e', receiver], { netns: `${b.netns}-right`, allowFailure: true });
  await waitFor('the right port to listen', async () => {
    const sent = await run('busybox', ['sh', '-c', `printf '%s' "$0" | busybox timeout 5 busybox nc ${RIGHT.interfaces[0]!.ip} ${PORT}`, text], { netns: `${a.netns}-left`, allowFailure: true });
    return sent.exitCode === 0;
  }, 15_000, 100);
  return (await received).stdout;
}

for (const stretch of ['wireguard', 'plain'] as const) {
  describe(`the stretch across the WAN, ${stretch === 'wireguard' ? 'in a WireGuard tunnel per pair of clouds' : 'as plain VXLAN (the control case)'}`, function () {
    this.timeout(180_000);
    const id = stretch === 'wireguard' ? 'mvwgw' : 'mvwgp';
    const stateDir = path.join(testbedsDir, id);
    let record: TestbedRecord;
    let tmp: string;
    let wanCapture: Buffer;
    let innerCapture: Buffer;
    let received: string;
    const marker = `MIGRAVI-MARKER-${randomBytes(8).toString('hex')}`;

    before(async () => {
      await testbedDown(stateDir, id);
      tmp = await mkdtemp(path.join(os.tmpdir(), `migravi-${id}-`));
      record = await testbedUp({
        id, stateDir, clouds: stretch === 'wireguard' ? ['cloud-a', 'cloud-b', 'cloud-c'] : ['cloud-a', 'cloud-b'],
        wanGateway: '203.0.113.1', wanPrefixLength: 25, wanRateMbit: 1000, criuPath, hostLink: '198.18.0.32/30', stretch,
      });
      const [a, b] = record.clouds as [LocalCloudConfig, LocalCloudConfig];
      for (const [cloud, peer, port] of [[a, b, LEFT], [b, a, RIGHT]] as const) {
        const plane = new LocalControlPlane(cloud);
        await plane.ensureNetwork(NETWORK);
        await plane.ensureStretch(NETWORK, peer.publicIp);
        await plane.ensurePort(port);
        await plane.setPortEnabled(port.name, true);
      }
      // cloud-a's link on the WAN (its port on the WAN's bridge), and cloud-b's side of the stretch.
      const wan = await capture(wanNamespace(id), 'w0', path.join(tmp, 'wan.pcap'));
      const inner = await capture(b.netns, `vx-${NETWORK.name}`, path.join(tmp, 'inner.pcap'));
      try {
        received = await sendAcross(record, `${marker}\n`.repeat(20));
      } finally {
        wanCapture = await wan.stop();
        innerCapture = await inner.stop();
      }
    });

    after(async () => {
      await testbedDown(stateDir, id);
      if (tmp) await rm(tmp, { recursive: true, force: true });
    });

    it('carries the traffic between the two ports across the WAN', () => {
      assert.equal(received, `${marker}\n`.repeat(20));
      assert.notEqual(innerCapture.indexOf(marker), -1, "the marker is not on cloud-b's side of the stretch");
    });

    if (stretch === 'wireguard') {
      it('shows nobody on the WAN the marker: only WireGuard packets, no VXLAN', async () => {
        assert.equal(wanCapture.indexOf(marker), -1, 'the marker crossed the WAN in plaintext');
        assert.equal(await countPackets(path.join(tmp, 'wan.pcap'), `udp port 4789`), 0, 'VXLAN on the WAN');
        const wireguard = await countPackets(path.join(tmp, 'wan.pcap'), 'udp portrange 51820-51823');
        assert.ok(wireguard >= 3, `only ${wireguard} WireGuard packets on the WAN for a TCP exchange`);
      });

      it('uses keys made for each pair of clouds, readable by root only', async () => {
        const [a, b, c] = record.clouds as [LocalCloudConfig, LocalCloudConfig, LocalCloudConfig];
        const publicKey = async (cloud: LocalCloudConfig, peer: string) => (await run('wg', ['show', cloud.wanTunnels![peer]!.interface, 'public-key'], { netns: cloud.netns })).stdout.trim();
        const peersOf = async (cloud: LocalCloudConfig, peer: string) => (await run('wg', ['show', cloud.wanTunnels![peer]!.interface, 'peers'], { netns: cloud.netns })).stdout.trim();
        const aToB = await publicKey(a, 'cloud-b');
        const aToC = await publicKey(a, 'cloud-c');
        assert.notEqual(aToB, aToC, 'cloud-a uses one key for two peers');
        assert.equal(await peersOf(b, 'cloud-a'), aToB, "cloud-b's tunnel to cloud-a accepts another key than cloud-a's for that pair");
        assert.equal(await peersOf(c, 'cloud-a'), aToC);
        const psk = (cloud: LocalCloudConfig, peer: string) => readFile(path.join(cloud.dir, 'wan-keys', `${peer}.psk`), 'utf8');
        assert.equal(await psk(a, 'cloud-b'), await psk(b, 'cloud-a'));
        assert.notEqual(await psk(a, 'cloud-b'), await psk(a, 'cloud-c'), 'two pairs share a preshared key');
        for (const file of ['cloud-b.key', 'cloud-b.psk', 'cloud-c.key', 'cloud-c.psk']) {
          assert.equal((await stat(path.join(a.dir, 'wan-keys', file))).mode & 0o777, 0o600, `${file} is readable by others`);
        }
      });
    } else {
      it('shows anyone on the WAN the marker (what the tunnels hide)', () => {
        assert.notEqual(wanCapture.indexOf(marker), -1, 'the capture on the WAN cannot see a plain stretch');
      });
    }

    it(stretch === 'wireguard' ? 'drops a VXLAN frame forged on the WAN: the outside world cannot reach a port' : 'lets a VXLAN frame forged on the WAN reach a port (what the tunnels refuse)', async () => {
      const [a] = record.clouds as [LocalCloudConfig];
      const outside = record.outside.netns;
      await run('ip', ['link', 'add', 'forged', 'type', 'vxlan', 'id', String(NETWORK.vni), 'remote', a.publicIp, 'dstport', '4789', 'dev', 'eth0'], { netns: outside });
      try {
        await run('ip', ['addr', 'add', '10.61.0.99/24', 'dev', 'forged'], { netns: outside });
        await run('ip', ['link', 'set', 'forged', 'up'], { netns: outside });
        const ping = await run('busybox', ['ping', '-c', '3', '-W', '1', LEFT.interfaces[0]!.ip], { netns: outside, allowFailure: true });
        assert.equal(ping.exitCode === 0, stretch === 'plain', `ping from the outside world through a forged VXLAN: ${ping.stdout}`);
      } finally {
        await run('ip', ['link', 'del', 'forged'], { netns: outside, allowFailure: true });
      }
    });
  });
}
