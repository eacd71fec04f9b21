/**
 * This machine's CRIU rates, measured once by the set-up (scripts/calibrate-host.ts) so that the
 * first migration's blackout prediction uses them instead of defaults measured elsewhere: a
 * process holding a known memory ballast is dumped (to disk and into memory) and restored at two
 * sizes, and the per-byte rates are the slopes between them (CRIU's fixed costs cancel out; the
 * prediction adds the runtime's own). A cloud's earlier migrations, once it has some, take over.
 */
import { spawn } from 'node:child_process';
import { mkdir, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { run } from './exec';
import { isAlive, stopPid, waitFor } from './processes';

export const HOST_CALIBRATION_FILE = process.env.MIGRAVI_HOST_CALIBRATION ?? '/var/lib/migravi/host-calibration.json';

export interface HostCalibration {
  /** When and with which CRIU it was measured (a new CRIU is measured again). */
  at: string;
  criu: string;
  /** Bytes per millisecond beyond CRIU's fixed cost: dumps to disk, into memory (tmpfs), restores from disk. */
  dumpBytesPerMs: number;
  memoryDumpBytesPerMs: number;
  restoreBytesPerMs: number;
  /** What was measured: image bytes and milliseconds of each run. */
  runs: Array<{ kind: 'dump' | 'memory-dump' | 'restore'; bytes: number; ms: number }>;
}

export async function readHostCalibration(file = HOST_CALIBRATION_FILE): Promise<HostCalibration | undefined> {
  try {
    const c = JSON.parse(await readFile(file, 'utf8')) as HostCalibration;
    return c.dumpBytesPerMs > 0 && c.memoryDumpBytesPerMs > 0 && c.restoreBytesPerMs > 0 ? c : undefined;
  } catch {
    return undefined; // none yet, or torn: the prediction falls back to its defaults
  }
}

/** Bytes of an image's memory pages (what grows with the ballast). */
async function pagesBytes(dir: string): Promise<number> {
  let bytes = 0;
  for (const f of await readdir(dir)) if (/^pages-\d+\.img$/.test(f)) bytes += (await stat(path.join(dir, f))).size;
  return bytes;
}

/** Starts the ballast process in its own session and waits until its memory is resident and it sleeps in poll. */
async function startBallast(kvServer: string, mib: number): Promise<{ pid: number; exited: Promise<void> }> {
  const child = spawn(kvServer, ['0', String(mib)], { detached: true, stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const pid = child.pid!;
  await waitFor(`the calibration process (${mib} MiB) to fill its memory`, async () => {
    const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
    if (!status) throw new Error(`the calibration process ${kvServer} exited`);
    const rssKiB = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
    return rssKiB >= mib * 1024 && /State:\s+S/.test(status);
  }, 30_000, 20);
  return { pid, exited };
}

async function timed(f: () => Promise<unknown>): Promise<number> {
  const started = process.hrtime.bigint();
  await f();
  return Number(process.hrtime.bigint() - started) / 1e6;
}

/** Per-byte rate between two sizes: the slope of ms over bytes (the fixed part cancels). */
function slope(small: { bytes: number; ms: number }, big: { bytes: number; ms: number }, what: string): number {
  const rate = (big.bytes - small.bytes) / (big.ms - small.ms);
  if (!(rate > 0 && Number.isFinite(rate))) throw new Error(`the ${what} calibration is inconsistent: ${small.bytes} B in ${small.ms.toFixed(0)} ms, ${big.bytes} B in ${big.ms.toFixed(0)} ms`);
  return rate;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

/**
 * Dumps and restores a ballast process at `sizesMiB` (two sizes, `rounds` times each), images in
 * `workDir` (disk) and `memoryDir` (tmpfs); every process it starts is stopped by PID, every image removed.
 */
export async function calibrateHost(opts: { criu: string; kvServer: string; workDir: string; memoryDir: string; sizesMiB?: [number, number]; rounds?: number }): Promise<HostCalibration> {
  const [smallMiB, bigMiB] = opts.sizesMiB ?? [32, 160];
  const rounds = opts.rounds ?? 3;
  const runs: HostCalibration['runs'] = [];
  const criuVersion = (await run(opts.criu, ['--version'])).stdout.split('\n')[0]!.trim();
  const started: number[] = [];
  try {
    for (let round = 0; round < rounds; round++) {
      for (const mib of [smallMiB, bigMiB]) {
        for (const [kind, root] of [['dump', opts.workDir], ['memory-dump', opts.memoryDir]] as const) {
          const dir = path.join(root, `calibration-${process.pid}-${kind}-${mib}`);
          await rm(dir, { recursive: true, force: true });
          await mkdir(dir, { recursive: true, mode: 0o700 });
          try {
            const ballast = await startBallast(opts.kvServer, mib);
            started.push(ballast.pid);
            const dumpMs = await timed(() => run(opts.criu, ['dump', '-t', String(ballast.pid), '-D', dir, '-o', 'dump.log', '-v2']));
            await ballast.exited; // reaped: its PID is free for the restore
            const bytes = await pagesBytes(dir);
            runs.push({ kind, bytes, ms: dumpMs });
            if (kind === 'dump') {
              const restoreMs = await timed(() => run(opts.criu, ['restore', '-D', dir, '-o', 'restore.log', '-v2', '-d']));
              runs.push({ kind: 'restore', bytes, ms: restoreMs });
              await stopPid(ballast.pid); // the restored process has the same PID
            }
          } finally {
            await rm(dir, { recursive: true, force: true });
          }
        }
      }
    }
  } finally {
    for (const pid of started) if (isAlive(pid)) await stopPid(pid);
  }
  const rate = (kind: HostCalibration['runs'][number]['kind']) => {
    const at = (mib: number) => {
      const sizeRuns = runs.filter((r) => r.kind === kind && Math.abs(r.bytes - mib * 1048576) < 8 * 1048576);
      return { bytes: median(sizeRuns.map((r) => r.bytes)), ms: median(sizeRuns.map((r) => r.ms)) };
    };
    return slope(at(smallMiB), at(bigMiB), kind);
  };
  return { at: new Date().toISOString(), criu: criuVersion, dumpBytesPerMs: rate('dump'), memoryDumpBytesPerMs: rate('memory-dump'), restoreBytesPerMs: rate('restore'), runs };
}

export async function writeHostCalibration(calibration: HostCalibration, file = HOST_CALIBRATION_FILE): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(`${file}.tmp`, `${JSON.stringify(calibration, null, 2)}\n`);
  await rename(`${file}.tmp`, file);
}
