import type { CompressionSample } from './compression';

/** What one benchmark run measured, the medians over runs, the ratios and the issue's targets. */

/** MigraVI (streamed image), MigraVI with post-copy, the hand-run floor, Podman. */
export type System = 'migravi' | 'postcopy' | 'auto' | 'floor' | 'podman';

export interface BenchCase {
  id: string;
  label: string;
  members: number;
  ballastMiB: number;
}

export interface RunResult {
  case: string;
  system: System;
  run: number;
  /** Longest gap between answers seen by a probe on its one open connection (worst member). */
  blackoutMs: number;
  /** Mode "auto": the way the group went and why (the report's words). */
  mode?: string;
  /** MigraVI: the group's frozen time as the workflow measured it; floor/Podman: checkpoint start → restore returned. */
  freezeMs: number;
  /** MigraVI: the workflow's wall time (start to result); floor/Podman: same as the freeze. */
  totalMs: number;
  /** Time per phase (MigraVI: the report's phases, summed per name; floor/Podman: their script's steps). */
  phases: Record<string, number>;
  /** Size of the checkpoint images (all members). */
  imageBytes: number;
  /** Bytes the destination cloud's WAN interface received during the run (kernel counters). */
  wanBytes: number;
  /** Destination WAN receive rate while the frozen image crossed the link (kernel counters over that window). */
  transferMbit: number;
  /** MigraVI: wall time minus the time any activity ran (Temporal's history). */
  overheadMs?: number;
  /** MigraVI: the blackout the workflow predicted before the freeze. */
  predictedMs?: number;
  /** Post-copy: from the restore until every page was in (the destination's report). */
  windowMs?: number;
  /** Post-copy: the probe's longest gap after the blackout, inside the window (its answers while pages arrive). */
  windowGapMs?: number;
  /** The floor's first run: how its image compresses (bench/compression.ts). */
  compression?: CompressionSample[];
  /** CPU seconds the whole machine used during the run (/proc/stat). */
  cpuSeconds: number;
  /** Every probe kept its connection (same local port, counter +1 each time, no reset). */
  connectionsKept: boolean;
  /** Every migrated process re-read its whole memory and found it intact. */
  memoryIntact: boolean;
  /** Every member runs at the destination and not at the source (read from the runtimes). */
  placedAtDestination: boolean;
  error?: string;
}

export interface Stat {
  median: number;
  min: number;
  max: number;
  n: number;
}

export function stat(values: number[]): Stat {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return { median: NaN, min: NaN, max: NaN, n: 0 };
  const mid = v.length >> 1;
  return { median: v.length % 2 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2, min: v[0]!, max: v[v.length - 1]!, n: v.length };
}

export interface Summary {
  case: string;
  system: System;
  blackoutMs: Stat;
  freezeMs: Stat;
  totalMs: Stat;
  transferMbit: Stat;
  overheadPct: Stat;
  /** (predicted − measured freeze) / measured freeze, in %. */
  predictionErrorPct: Stat;
  cpuSeconds: Stat;
  windowMs: Stat;
  windowGapMs: Stat;
  wanMiB: Stat;
  imageMiB: Stat;
  failures: number;
}

export function summarize(results: RunResult[], cases: BenchCase[], systems: System[]): Summary[] {
  const out: Summary[] = [];
  for (const c of cases) {
    for (const system of systems) {
      const all = results.filter((r) => r.case === c.id && r.system === system);
      if (!all.length) continue;
      const good = all.filter((r) => !r.error && r.connectionsKept && r.memoryIntact && r.placedAtDestination);
      const of = (f: (r: RunResult) => number) => stat(good.map(f));
      out.push({
        case: c.id,
        system,
        blackoutMs: of((r) => r.blackoutMs),
        freezeMs: of((r) => r.freezeMs),
        totalMs: of((r) => r.totalMs),
        transferMbit: of((r) => r.transferMbit),
        overheadPct: of((r) => (r.overheadMs === undefined ? NaN : (100 * r.overheadMs) / r.totalMs)),
        predictionErrorPct: of((r) => (r.predictedMs === undefined ? NaN : (100 * (r.predictedMs - r.freezeMs)) / r.freezeMs)),
        cpuSeconds: of((r) => r.cpuSeconds),
        windowMs: of((r) => r.windowMs ?? NaN),
        windowGapMs: of((r) => r.windowGapMs ?? NaN),
        wanMiB: of((r) => r.wanBytes / 1048576),
        imageMiB: of((r) => r.imageBytes / 1048576),
        failures: all.length - good.length,
      });
    }
  }
  return out;
}

const fmt = (s: Stat, digits = 0) => (s.n ? `${s.median.toFixed(digits)} (${s.min.toFixed(digits)}–${s.max.toFixed(digits)})` : '–');

export function resultsTable(summaries: Summary[], cases: BenchCase[]): string {
  const lines = [
    '| case | system | blackout ms | freeze ms | prediction error % | total ms | post-copy window ms (longest gap in it) | image MiB | WAN MiB | transfer Mbit/s | overhead % | CPU s | failed runs |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const s of summaries) {
    const label = cases.find((c) => c.id === s.case)?.label ?? s.case;
    lines.push(
      `| ${label} | ${s.system} | ${fmt(s.blackoutMs)} | ${fmt(s.freezeMs)} | ${fmt(s.predictionErrorPct)} | ${fmt(s.totalMs)} | ${s.windowMs.n ? `${fmt(s.windowMs)} (${fmt(s.windowGapMs)})` : '–'} | ${fmt(s.imageMiB)} | ${fmt(s.wanMiB)} | ${fmt(s.transferMbit)} | ${fmt(s.overheadPct, 1)} | ${fmt(s.cpuSeconds, 1)} | ${s.failures} |`,
    );
  }
  return lines.join('\n');
}

export interface Verdict {
  target: string;
  value: string;
  met: boolean | undefined;
}

/** The issue's targets, as ratios of medians of the same run (undefined: not measured in this run). */
export function verdicts(summaries: Summary[], cases: BenchCase[], linkMbit: number): Verdict[] {
  const get = (caseId: string | undefined, system: System) => summaries.find((s) => s.case === caseId && s.system === system);
  const out: Verdict[] = [];
  const ratio = (a: number, b: number) => a / b;
  for (const c of cases.filter((k) => k.members === 1)) {
    const m = get(c.id, 'migravi');
    const floor = get(c.id, 'floor');
    const podman = get(c.id, 'podman');
    if (m && floor) {
      const limit = c.ballastMiB >= 256 ? 0.9 : 1.15;
      const r = ratio(m.blackoutMs.median, floor.blackoutMs.median);
      out.push({ target: `${c.label}: blackout ≤ ${limit}× the floor's`, value: `${r.toFixed(2)}×`, met: Number.isFinite(r) ? r <= limit : undefined });
    }
    if (m && podman) {
      const r = ratio(m.blackoutMs.median, podman.blackoutMs.median);
      out.push({ target: `${c.label}: blackout below Podman's`, value: `${r.toFixed(2)}×`, met: Number.isFinite(r) ? r < 1 : undefined });
    }
    if (m) {
      out.push({ target: `${c.label}: orchestration overhead ≤ 5 % of the total`, value: `${m.overheadPct.median.toFixed(1)} %`, met: Number.isFinite(m.overheadPct.median) ? m.overheadPct.median <= 5 : undefined });
      const use = m.transferMbit.median / linkMbit;
      out.push({ target: `${c.label}: WAN throughput ≥ 90 % of the link while transferring`, value: `${(100 * use).toFixed(0)} %`, met: Number.isFinite(use) ? use >= 0.9 : undefined });
    }
    if (m && c.ballastMiB === 1024) {
      out.push({ target: '1 GiB: client-seen blackout ≤ 1 s', value: `${m.blackoutMs.median.toFixed(0)} ms`, met: Number.isFinite(m.blackoutMs.median) ? m.blackoutMs.median <= 1000 : undefined });
    }
    const pc = get(c.id, 'postcopy');
    if (pc && floor) {
      const limit = c.ballastMiB >= 256 ? 0.9 : 1.15;
      const r = ratio(pc.blackoutMs.median, floor.blackoutMs.median);
      out.push({ target: `${c.label}, post-copy: blackout ≤ ${limit}× the floor's`, value: `${r.toFixed(2)}×`, met: Number.isFinite(r) ? r <= limit : undefined });
    }
    if (pc && podman) {
      const r = ratio(pc.blackoutMs.median, podman.blackoutMs.median);
      out.push({ target: `${c.label}, post-copy: blackout below Podman's`, value: `${r.toFixed(2)}×`, met: Number.isFinite(r) ? r < 1 : undefined });
    }
    const auto = get(c.id, 'auto');
    if (auto && m && pc) {
      // Issue 23's target for mode "auto": never much worse than the better of the two.
      const r = ratio(auto.blackoutMs.median, Math.min(m.blackoutMs.median, pc.blackoutMs.median));
      out.push({ target: `${c.label}, auto: blackout ≤ 1.1× min(streamed, post-copy)`, value: `${r.toFixed(2)}×`, met: Number.isFinite(r) ? r <= 1.1 : undefined });
    }
    if (pc && c.ballastMiB === 1024) {
      out.push({ target: '1 GiB, post-copy: client-seen blackout ≤ 1 s', value: `${pc.blackoutMs.median.toFixed(0)} ms`, met: Number.isFinite(pc.blackoutMs.median) ? pc.blackoutMs.median <= 1000 : undefined });
    }
  }
  const one = cases.find((c) => c.members === 1 && c.ballastMiB === 64);
  for (const c of cases.filter((k) => k.members > 1)) {
    const m = get(c.id, 'migravi');
    const single = get(one?.id, 'migravi');
    if (!m || !single) continue;
    const time = ratio(m.totalMs.median, single.totalMs.median);
    const blackout = ratio(m.blackoutMs.median, single.blackoutMs.median);
    if (c.members === 16) out.push({ target: '16-container VI in ≤ 6× the time of one container', value: `${time.toFixed(2)}×`, met: time <= 6 });
    if (c.members === 16) out.push({ target: "16-container VI: group blackout ≤ 2× a single container's", value: `${blackout.toFixed(2)}×`, met: blackout <= 2 });
    if (c.members !== 16) out.push({ target: `${c.label}: time and blackout vs one container (no target)`, value: `${time.toFixed(2)}× time, ${blackout.toFixed(2)}× blackout`, met: undefined });
  }
  return out;
}

export function verdictTable(verdicts: Verdict[]): string {
  return ['| target | this run | met |', '|---|---|---|', ...verdicts.map((v) => `| ${v.target} | ${v.value} | ${v.met === undefined ? '–' : v.met ? 'yes' : '**no**'} |`)].join('\n');
}
