/**
 * What the stretch's encryption costs (providers/local/wan-tunnels.ts): two ports of one
 * stretched network, one per cloud, on two testbeds side by side, one stretching in WireGuard
 * tunnels and one as plain VXLAN, interleaved run by run at each WAN rate. Throughput is what the
 * receiving port counted over the sender's wall time; latency is busybox ping's average. Prints a
 * table (medians) and writes it with every run to stretch.json.
 *   node dist/bench/stretch.js [--rates 1000,10000] [--runs 3] [--mib 256] [--out DIR]
 *   (the blackout's cost: bash scripts/bench.sh --systems migravi --plain-stretch … against the same without)
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { run } from '../lib/exec';
import { criuPath, testbedsDir } from '../lib/paths';
import { waitFor } from '../lib/processes';
import type { ContainerSpec } from '../lib/types';
import type { LocalCloudConfig } from '../providers/local/cloud-config';
import { LocalControlPlane } from '../providers/local/control-plane';
import { setWanRate, testbedDown, testbedUp, type TestbedRecord } from '../providers/local/testbed';

type Stretch = 'wireguard' | 'plain';
const TESTBEDS: Record<Stretch, { id: string; hostLink: string }> = {
  wireguard: { id: 'bstrw', hostLink: '198.18.0.36/30' },
  plain: { id: 'bstrp', hostLink: '198.18.0.40/30' },
};
const NETWORK = { name: 'bench', cidr: '10.62.0.0/24', vni: 4400, mtu: 1390 };
const port = (name: string, host: number): ContainerSpec => ({ name, interfaces: [{ network: 'bench', ip: `10.62.0.${host}`, mac: `02:62:00:00:00:${host.toString(16).padStart(2, '0')}` }], args: [], readonlyRootfs: false });
const SENDER = port('sender', 10);
const RECEIVER = port('receiver', 11);
const TCP_PORT = 7100;
/** Accepts one connection, counts its bytes, prints the count when the sender closes. */
const COUNTING_RECEIVER = `
  const server = require('node:net').createServer((socket) => {
    let bytes = 0;
    socket.on('data', (chunk) => (bytes += chunk.length));
    socket.on('end', () => { console.log(bytes); server.close(); });
  }).listen(Number(process.argv[1]));
  setTimeout(() => process.exit(3), 120000).unref();`;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const say = (line: string) => console.log(`[stretch] ${line}`);

async function bringUp(stretch: Stretch): Promise<TestbedRecord> {
  const { id, hostLink } = TESTBEDS[stretch];
  const stateDir = path.join(testbedsDir, id);
  await testbedDown(stateDir, id);
  const record = await testbedUp({ id, stateDir, clouds: ['cloud-a', 'cloud-b'], wanGateway: '203.0.113.1', wanPrefixLength: 25, wanRateMbit: 1000, criuPath, hostLink, stretch });
  const [a, b] = record.clouds as [LocalCloudConfig, LocalCloudConfig];
  for (const [cloud, peer, spec] of [[a, b, SENDER], [b, a, RECEIVER]] as const) {
    const plane = new LocalControlPlane(cloud);
    await plane.ensureNetwork(NETWORK);
    await plane.ensureStretch(NETWORK, peer.publicIp);
    await plane.ensurePort(spec);
    await plane.setPortEnabled(spec.name, true);
  }
  return record;
}

/** Sends `bytes` from the sender's port to the receiver's; the receiver counts what arrived. */
async function throughput(record: TestbedRecord, bytes: number): Promise<{ mbit: number; received: number }> {
  const [a, b] = record.clouds as [LocalCloudConfig, LocalCloudConfig];
  // Counted by a receiver of its own (busybox nc half-closes on its empty input, which ends the sender early).
  const counted = run(process.execPath, ['-e', COUNTING_RECEIVER, String(TCP_PORT)], { netns: `${b.netns}-receiver` });
  let wallMs = 0;
  await waitFor('the receiver to listen', async () => {
    const started = process.hrtime.bigint();
    const sent = await run('sh', ['-c', `head -c ${bytes} /dev/zero | busybox timeout 120 busybox nc ${RECEIVER.interfaces[0]!.ip} ${TCP_PORT}`], { netns: `${a.netns}-sender`, allowFailure: true });
    wallMs = Number(process.hrtime.bigint() - started) / 1e6;
    return sent.exitCode === 0;
  }, 15_000, 100);
  const received = Number((await counted).stdout.trim());
  if (received !== bytes) throw new Error(`the receiver counted ${received} bytes of ${bytes}`);
  return { mbit: (received * 8) / (wallMs * 1000), received };
}

async function latencyMs(record: TestbedRecord): Promise<number> {
  const [a] = record.clouds as [LocalCloudConfig];
  const { stdout } = await run('busybox', ['ping', '-c', '20', '-i', '0.05', RECEIVER.interfaces[0]!.ip], { netns: `${a.netns}-sender` });
  const avg = /min\/avg\/max = [\d.]+\/([\d.]+)\//.exec(stdout);
  if (!avg) throw new Error(`ping said: ${stdout}`);
  return Number(avg[1]);
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { rates: { type: 'string', default: '1000,10000' }, runs: { type: 'string', default: '3' }, mib: { type: 'string', default: '256' }, out: { type: 'string' } } });
  const rates = values.rates!.split(',').map(Number);
  const runs = Number(values.runs);
  const bytes = Number(values.mib) * 1048576;
  if (rates.some((r) => !(r > 0)) || !(runs >= 1) || !(bytes > 0)) throw new Error('--rates: positive Mbit/s, comma-separated; --runs and --mib: positive numbers');
  const out = values.out ?? path.join('/var/lib/migravi/bench', `stretch-${new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '')}`);
  await mkdir(out, { recursive: true });
  const records: Partial<Record<Stretch, TestbedRecord>> = {};
  const samples: Array<{ rate: number; stretch: Stretch; run: number; mbit: number; latencyMs: number }> = [];
  try {
    for (const stretch of ['wireguard', 'plain'] as const) records[stretch] = await bringUp(stretch);
    for (const rate of rates) {
      for (const stretch of ['wireguard', 'plain'] as const) for (const cloud of ['cloud-a', 'cloud-b']) await setWanRate(records[stretch]!, cloud, rate);
      for (let i = 1; i <= runs; i++) {
        for (const stretch of ['wireguard', 'plain'] as const) {
          const { mbit } = await throughput(records[stretch]!, bytes);
          const latency = await latencyMs(records[stretch]!);
          samples.push({ rate, stretch, run: i, mbit, latencyMs: latency });
          say(`${rate} Mbit/s WAN, ${stretch}, run ${i}: ${mbit.toFixed(0)} Mbit/s, ${latency.toFixed(3)} ms`);
        }
      }
    }
  } finally {
    for (const stretch of ['wireguard', 'plain'] as const) await testbedDown(path.join(testbedsDir, TESTBEDS[stretch].id), TESTBEDS[stretch].id);
  }
  const lines = ['| WAN | plain VXLAN | WireGuard | throughput cost | ping plain | ping WireGuard |', '|---|---|---|---|---|---|'];
  for (const rate of rates) {
    const of = (stretch: Stretch) => samples.filter((s) => s.rate === rate && s.stretch === stretch);
    const plain = median(of('plain').map((s) => s.mbit));
    const wg = median(of('wireguard').map((s) => s.mbit));
    lines.push(`| ${rate} Mbit/s | ${plain.toFixed(0)} Mbit/s | ${wg.toFixed(0)} Mbit/s | ${(100 * (1 - wg / plain)).toFixed(0)} % | ${median(of('plain').map((s) => s.latencyMs)).toFixed(3)} ms | ${median(of('wireguard').map((s) => s.latencyMs)).toFixed(3)} ms |`);
  }
  const table = lines.join('\n');
  console.log(`\nTCP across a stretched network, ${values.mib} MiB per run, medians of ${runs}:\n${table}`);
  await writeFile(path.join(out, 'stretch.json'), JSON.stringify({ bytes, runs, samples }, null, 2));
  await writeFile(path.join(out, 'stretch.md'), `${table}\n`);
  say(`written to ${out}`);
}

main().catch((err: unknown) => {
  console.error(`stretch bench: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
