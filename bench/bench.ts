/**
 * The benchmark: MigraVI against the floor (bench/floor.sh: runc checkpoint + tar|nc + runc restore
 * by hand) and Podman, on the same containers over the same shaped inter-cloud link, interleaved
 * run by run (A, B, C, A, B, C…) so that machine noise hits them alike. Prints a table, writes
 * results.json, table.md and chart.svg. Numbers come from observers outside the system measured:
 * the probes' own clocks (blackout), the kernel's interface and CPU counters, Temporal's history
 * (overhead), the runtimes (placement) and the migrated processes (memory check).
 *
 *   bash scripts/bench.sh [--wan-mbit 1000] [--sizes 16,64,256,1024] [--vi-sizes 4,16] [--runs 3]
 *                         [--systems migravi,postcopy,auto,floor,podman] [--out DIR] [--publish DIR]
 *                         [--plain-stretch]  (the private network's stretch as plain VXLAN: the encryption's cost)
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Client, Connection } from '@temporalio/client';
import { loadDataConverter } from '../lib/temporal-access';
import { ensureKeyRing } from '../lib/payload-keys';
import { startMigration } from '../client/migravi-client';
import { deployVi, removeVi } from '../activities/deploy-vi';
import { relayTemporalToClouds, startCloudWorkers, startOrchestratorWorker, startTemporalServer } from '../providers/local/embedded-stack';
import { criuPath, testbedsDir } from '../lib/paths';
import { stopPid, waitFor } from '../lib/processes';
import type { MigrationReport } from '../lib/types';
import { openLocalCloud, type LocalCloud } from '../providers/local/local-cloud';
import { testbedDown, testbedUp, type TestbedRecord } from '../providers/local/testbed';
import { startDemoClient, type DemoClient } from '../demo/scenario';
import { BENCH_VI, benchVi, memberIp, memberName, probePort, probeTarget } from './bench-vi';
import { blackoutChartSvg } from './chart';
import { floorMove } from './floor';
import { compressionTable } from './compression';
import { PodmanPeer } from './podman';
import { historyTimes } from './history';
import { ask, machineCpuSeconds, memoryCheck, throughputMbit, WanMeter, wanBytes } from './observers';
import { resultsTable, summarize, verdicts, verdictTable, type BenchCase, type RunResult, type System } from './results';

const TESTBED_ID = 'bench';
const HOST_LINK = '198.18.0.12/30';
const TEMPORAL_PORT = 7263;
const SOURCE = 'cloud-a';
const DESTINATION = 'cloud-b';
const SYSTEMS: System[] = ['migravi', 'postcopy', 'auto', 'floor', 'podman'];

function say(line: string): void {
  console.log(`[bench] ${line}`);
}

function numbers(text: string, what: string): number[] {
  const values = text.split(',').filter(Boolean).map(Number);
  if (values.some((v) => !Number.isInteger(v) || v <= 0)) throw new Error(`--${what}: a comma-separated list of positive integers, got "${text}"`);
  return values;
}

function parseOptions() {
  const { values } = parseArgs({
    options: {
      'wan-mbit': { type: 'string', default: '1000' },
      sizes: { type: 'string', default: '16,64,256,1024' },
      'vi-sizes': { type: 'string', default: '4,16' },
      runs: { type: 'string', default: '3' },
      systems: { type: 'string', default: 'migravi,postcopy,auto,floor,podman' },
      out: { type: 'string' },
      publish: { type: 'string' },
      'plain-stretch': { type: 'boolean', default: false },
    },
  });
  const wanMbit = Number(values['wan-mbit']);
  if (!(wanMbit > 0)) throw new Error(`--wan-mbit: a positive number of Mbit/s, got "${values['wan-mbit']}"`);
  const runs = Number(values.runs);
  if (!Number.isInteger(runs) || runs < 1) throw new Error(`--runs: a positive integer, got "${values.runs}"`);
  const systems = values.systems!.split(',') as System[];
  const unknown = systems.filter((s) => !SYSTEMS.includes(s));
  if (unknown.length) throw new Error(`--systems: unknown ${unknown.join(', ')} (known: ${SYSTEMS.join(', ')})`);
  const cases: BenchCase[] = [
    ...numbers(values.sizes!, 'sizes').map((mib) => ({ id: `mem-${mib}`, label: `${mib} MiB`, members: 1, ballastMiB: mib })),
    ...numbers(values['vi-sizes']!, 'vi-sizes').filter((n) => n > 1).map((n) => ({ id: `vi-${n}`, label: `VI of ${n}×64 MiB`, members: n, ballastMiB: 64 })),
  ];
  if (cases.some((c) => c.members * c.ballastMiB > os.totalmem() / 1048576 / 3)) throw new Error('a case needs more than a third of this machine\'s memory');
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '');
  return { wanMbit, runs, systems, cases, out: values.out ?? path.join('/var/lib/migravi/bench', stamp), publish: values.publish, stretch: values['plain-stretch'] ? 'plain' as const : 'wireguard' as const };
}

interface Stack {
  record: TestbedRecord;
  temporal: Client;
  connection: Connection;
  temporalPid: number;
  source: LocalCloud;
  destination: LocalCloud;
  wan: WanMeter;
  tmp: string;
  podman?: PodmanPeer;
}

async function startStack(wanMbit: number, logDir: string, withPodman: boolean, stretch: 'wireguard' | 'plain'): Promise<Stack> {
  const stateDir = path.join(testbedsDir, TESTBED_ID);
  await testbedDown(stateDir, TESTBED_ID);
  const record = await testbedUp({ id: TESTBED_ID, stateDir, clouds: [SOURCE, DESTINATION], wanGateway: '203.0.113.1', wanPrefixLength: 25, wanRateMbit: wanMbit, criuPath, hostLink: HOST_LINK, stretch }, say);
  await ensureKeyRing();
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'migravi-bench-'));
  let temporalPid: number | undefined;
  try {
    temporalPid = await startTemporalServer({ port: TEMPORAL_PORT, uiPort: TEMPORAL_PORT + 1000, dbFile: path.join(tmp, 'temporal.sqlite'), logFile: path.join(logDir, 'temporal.log'), headless: true });
    await relayTemporalToClouds(record, TEMPORAL_PORT, logDir);
    await startOrchestratorWorker(record, `127.0.0.1:${TEMPORAL_PORT}`, path.join(logDir, 'orchestrator.log'));
    await startCloudWorkers(record, TEMPORAL_PORT, logDir);
    const connection = await Connection.connect({ address: `127.0.0.1:${TEMPORAL_PORT}` });
    const source = openLocalCloud(stateDir, SOURCE);
    // The probes' port stays on the VI's network at the source for the whole benchmark.
    await deployVi(source, benchVi(1, 1));
    await source.controlPlane.ensurePort(probePort);
    await source.controlPlane.setPortEnabled(probePort.name, true);
    await removeVi(source, BENCH_VI, { deleteVolumes: true });
    const destination = openLocalCloud(stateDir, DESTINATION);
    const wan = await WanMeter.open(record, SOURCE, DESTINATION);
    const podman = withPodman ? await PodmanPeer.open(source, destination, tmp) : undefined;
    return { record, temporal: new Client({ connection, dataConverter: await loadDataConverter() }), connection, temporalPid, source, destination, wan, tmp, ...(podman ? { podman } : {}) };
  } catch (err) {
    if (withPodman) await PodmanPeer.close([openLocalCloud(stateDir, SOURCE), openLocalCloud(stateDir, DESTINATION)], tmp);
    await testbedDown(stateDir, TESTBED_ID);
    if (temporalPid) await stopPid(temporalPid);
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
}

async function stopStack(stack: Stack): Promise<void> {
  await stack.connection.close().catch(() => undefined);
  if (stack.podman) await PodmanPeer.close([stack.source, stack.destination], stack.tmp);
  await stack.wan.close().catch(() => undefined);
  await testbedDown(stack.record.options.stateDir, TESTBED_ID);
  await stopPid(stack.temporalPid);
  await rm(stack.tmp, { recursive: true, force: true });
}

/** Removes whatever a run left of the benchmark VI in either cloud. */
async function clearVi(stack: Stack): Promise<void> {
  for (const cloud of [stack.destination, stack.source]) await removeVi(cloud, BENCH_VI, { deleteVolumes: true }).catch(() => undefined);
}

function phasesOf(report: MigrationReport): Record<string, number> {
  const out: Record<string, number> = {};
  for (const p of report.phases) out[p.phase] = (out[p.phase] ?? 0) + p.durationMs;
  return out;
}

/** One move of the case's VI by one system, with everything observed around it. */
async function runOnce(stack: Stack, c: BenchCase, system: System, run: number): Promise<RunResult> {
  const tag = `${c.id}-${system}-${run}`;
  await clearVi(stack);
  const vi = benchVi(c.members, c.ballastMiB);
  if (system === 'podman') {
    if (!stack.podman || c.members !== 1) throw new Error('Podman moves one container, with --systems podman');
    // The port and rules as for any container of the VI; the service itself runs in Podman.
    await deployVi(stack.source, benchVi(1, 1));
    await stack.podman.deploy(stack.source, memberName(0), vi.containers[0]!.command);
  } else {
    await deployVi(stack.source, vi);
  }
  const probes: DemoClient[] = [];
  const result: RunResult = {
    case: c.id, system, run, blackoutMs: NaN, freezeMs: NaN, totalMs: NaN, phases: {}, imageBytes: 0, wanBytes: 0, transferMbit: NaN,
    cpuSeconds: NaN, connectionsKept: false, memoryIntact: false, placedAtDestination: false,
  };
  try {
    // A big ballast takes a moment to touch: the service listens once it is done.
    const probeNetns = stack.source.controlPlane.portNetns(probePort.name);
    for (let i = 0; i < c.members; i++) await waitFor(`${memberName(i)} to answer`, async () => /^\d+$/.test(await ask(probeNetns, memberIp(i), 7000, 'GET')), 60_000, 100);
    for (let i = 0; i < c.members; i++) probes.push(await startDemoClient(stack.record, SOURCE, probeTarget(i, tag), probePort.name));
    const before = await Promise.all(probes.map((p) => p.waitForReplies(50)));
    const cpuBefore = await machineCpuSeconds();
    await stack.wan.start();
    let window: [number, number] = [NaN, NaN];
    let windowEnd = NaN;
    if (system === 'migravi' || system === 'postcopy' || system === 'auto') {
      const mode = ({ migravi: 'streamed', postcopy: 'post-copy', auto: 'auto' } as const)[system];
      const handle = await startMigration(stack.temporal, { name: `bench-${tag}`, vi: BENCH_VI, source: SOURCE, destination: DESTINATION, options: { drainTimeoutSeconds: 0, mode } });
      const report = await handle.result();
      const postCopy = report.groups[0]?.mode === 'post-copy';
      if (system === 'auto') result.mode = `${report.groups[0]?.mode}: ${report.groups[0]?.modeReason}`;
      const times = await historyTimes(handle);
      result.freezeMs = report.groups[0]?.frozenMs ?? NaN;
      result.predictedMs = report.groups[0]?.predicted?.ms;
      result.totalMs = times.wallMs;
      result.overheadMs = times.overheadMs;
      result.phases = phasesOf(report);
      result.imageBytes = report.containers.reduce((sum, r) => sum + r.imageBytes, 0);
      // The image crosses the link while CRIU writes it (checkpoint) and after (transfer: resends, writable rootfs, volumes).
      const checkpoint = report.phases.find((p) => p.phase === 'checkpoint');
      const transfer = report.phases.find((p) => p.phase === 'transfer');
      if (checkpoint && transfer) window = [checkpoint.startedAt, transfer.startedAt + transfer.durationMs];
      // Post-copy: the memory crosses after the restore, in the post-copy phase.
      const pages = report.phases.find((p) => p.phase === 'post-copy');
      if (postCopy && pages) {
        window = [pages.startedAt, pages.startedAt + pages.durationMs];
        windowEnd = window[1];
        result.windowMs = Math.max(...report.containers.map((r) => r.postCopy?.windowMs ?? NaN));
      }
    } else if (system === 'floor') {
      if (c.members !== 1) throw new Error('the floor moves one container');
      const times = await floorMove(stack.source, stack.destination, memberName(0), stack.tmp, { compression: run === 1 });
      if (times.compression) result.compression = times.compression;
      result.freezeMs = result.totalMs = times.totalMs;
      result.phases = { checkpoint: times.checkpointMs, copy: times.copyMs, restore: times.restoreMs };
      window = [times.startedAt + times.checkpointMs, times.startedAt + times.checkpointMs + times.copyMs];
    } else {
      const times = await stack.podman!.move(stack.source, stack.destination, memberName(0));
      result.freezeMs = result.totalMs = times.totalMs;
      result.phases = { checkpoint: times.checkpointMs, copy: times.copyMs, restore: times.restoreMs };
      result.imageBytes = times.exportBytes;
      window = [times.startedAt + times.checkpointMs, times.startedAt + times.checkpointMs + times.copyMs];
    }
    const samples = await stack.wan.stop();
    result.cpuSeconds = (await machineCpuSeconds()) - cpuBefore;
    result.wanBytes = wanBytes(samples).destinationRx;
    result.transferMbit = throughputMbit(samples, window[0], window[1]);
    const after = await Promise.all(probes.map((p) => p.waitForReplies(50)));
    result.blackoutMs = Math.max(...after.map((s) => s.maxGapMs));
    if (Number.isFinite(windowEnd)) {
      // Answers while the pages arrive: the slow gaps after the blackout ended, up to the window's end (none: all under 25 ms).
      const inWindow = after.flatMap((s) => (s.slowGaps ?? []).filter((g) => g.endedAt > (s.maxGapEndedAt ?? Infinity) && g.endedAt <= windowEnd + 50));
      result.windowGapMs = Math.max(25, ...inWindow.map((g) => g.ms));
    }
    result.connectionsKept = after.every((s, i) => s.localPort === before[i]!.localPort && s.discontinuities === 0 && !s.error);
    const checks = await Promise.all(Array.from({ length: c.members }, (_, i) => memoryCheck(probeNetns, memberIp(i), 7000)));
    result.memoryIntact = checks.every((answer) => answer === `OK ${c.ballastMiB}`);
    // Where each member runs, as its runtime says (runc's state, or Podman's).
    const statusIn = (cloud: LocalCloud, name: string) => (system === 'podman' ? stack.podman!.status(cloud, name) : cloud.runtime.status(name));
    const placement = await Promise.all(
      Array.from({ length: c.members }, async (_, i) => [await statusIn(stack.source, memberName(i)), await statusIn(stack.destination, memberName(i))]),
    );
    result.placedAtDestination = placement.every(([at, to]) => (at === 'absent' || (system === 'podman' && at === 'exited')) && to === 'running');
    if (!result.memoryIntact) result.error = `memory check answers: ${checks.join(', ')}`;
    if (system === 'floor' && !result.imageBytes) result.imageBytes = NaN; // the floor's image is gone with its directory; MigraVI's report says it
  } catch (err) {
    result.error = err instanceof Error ? err.message : String(err);
    await stack.wan.stop().catch(() => undefined);
  } finally {
    for (const p of probes) await stopPid(p.pid);
    if (system === 'podman') await stack.podman?.remove([stack.source, stack.destination], memberName(0));
  }
  return result;
}

async function main(): Promise<void> {
  const opts = parseOptions();
  await mkdir(opts.out, { recursive: true });
  say(`results in ${opts.out}; cases: ${opts.cases.map((c) => c.label).join(', ')}; systems: ${opts.systems.join(', ')}; ${opts.runs} runs each; link ${opts.wanMbit} Mbit/s; stretch ${opts.stretch === 'plain' ? 'plain VXLAN' : 'in WireGuard tunnels'}`);
  const stack = await startStack(opts.wanMbit, opts.out, opts.systems.includes('podman'), opts.stretch);
  const results: RunResult[] = [];
  try {
    for (const c of opts.cases) {
      const systems = c.members === 1 ? opts.systems : opts.systems.filter((s) => s === 'migravi' || s === 'postcopy' || s === 'auto');
      for (let run = 1; run <= opts.runs; run++) {
        for (const system of systems) {
          const r = await runOnce(stack, c, system, run);
          results.push(r);
          say(
            `${c.label} ${system} run ${run}: ` +
              (r.error ? `FAILED: ${r.error}` : `blackout ${r.blackoutMs} ms, freeze ${r.freezeMs} ms, total ${Math.round(r.totalMs)} ms, WAN ${(r.wanBytes / 1048576).toFixed(1)} MiB at ${r.transferMbit.toFixed(0)} Mbit/s, ` +
                `CPU ${r.cpuSeconds.toFixed(1)} s${r.overheadMs !== undefined ? `, overhead ${Math.round(r.overheadMs)} ms, predicted ${r.predictedMs} ms` : ''}; connection ${r.connectionsKept ? 'kept' : 'LOST'}, memory ${r.memoryIntact ? 'intact' : 'DAMAGED'}, ${r.placedAtDestination ? 'at destination' : 'MISPLACED'}`),
          );
          await writeFile(path.join(opts.out, 'results.json'), JSON.stringify({ options: opts, results }, null, 2));
        }
      }
    }
    await clearVi(stack);
  } finally {
    await stopStack(stack);
  }
  const summaries = summarize(results, opts.cases, opts.systems);
  const table = resultsTable(summaries, opts.cases);
  const targets = verdictTable(verdicts(summaries, opts.cases, opts.wanMbit));
  const command = `bash scripts/bench.sh ${process.argv.slice(2).join(' ')}`.trim();
  const compressed = opts.cases.flatMap((c) => {
    const samples = results.find((r) => r.case === c.id && r.compression)?.compression;
    return samples ? [{ label: c.label, samples }] : [];
  });
  const compression = compressed.length ? `\n\nCompression of the floor's image (one core each way; bench/compression.ts):\n\n${compressionTable(compressed, opts.wanMbit)}\n` : '';
  const markdown = `Medians of ${opts.runs} runs (min–max), link ${opts.wanMbit} Mbit/s, ${new Date().toISOString()}: \`${command}\`\n\n${table}\n\n${targets}\n${compression}`;
  console.log(`\n${markdown}`);
  const svg = await blackoutChartSvg(summaries, opts.cases, `Client-seen blackout over a ${opts.wanMbit} Mbit/s link (median, min–max of ${opts.runs})`);
  for (const dir of [opts.out, ...(opts.publish ? [opts.publish] : [])]) {
    await mkdir(dir, { recursive: true });
    await writeFile(path.join(dir, 'results.json'), JSON.stringify({ options: opts, command, summaries, results }, null, 2));
    await writeFile(path.join(dir, 'table.md'), markdown);
    await writeFile(path.join(dir, 'chart.svg'), svg);
  }
  say(`wrote results.json, table.md and chart.svg to ${[opts.out, opts.publish].filter(Boolean).join(' and ')}`);
  if (results.some((r) => r.error || !r.connectionsKept || !r.memoryIntact || !r.placedAtDestination)) process.exitCode = 1;
}

main().catch((err: unknown) => {
  console.error(`bench failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
