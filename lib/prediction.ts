/**
 * The blackout of a group, predicted before its freeze from what was measured just before: the
 * memory its processes hold (what CRIU will write), the link rate (a probe through the same image
 * stream), and the rates at which this source host dumped and the destination host restored in
 * earlier migrations (until they have some: the rates the set-up measured on each host,
 * lib/host-calibration.ts, else defaults from PLATFORM.md). Deterministic: the
 * workflow computes it from activity results.
 */

/** One earlier dump or restore on a host: the image size and how long CRIU took. */
export interface RateSample {
  bytes: number;
  ms: number;
}

export interface PredictionInputs {
  /** Memory each member's processes hold (anonymous and shared pages: what an image contains). */
  memberBytes: number[];
  /** Bytes per millisecond measured through the image stream just before. */
  linkBytesPerMs: number;
  dumps: RateSample[];
  /** The dumps (earlier and to come) write into memory, not to disk (post-copy). */
  dumpsInMemory?: boolean;
  restores: RateSample[];
  /** The rates the set-up measured on the source's host (dumps, to disk or into memory as above) and the destination's (restores). */
  calibrated?: { dumpBytesPerMs?: number; restoreBytesPerMs?: number };
  /** CPU cores of the two hosts: the members of a group share them. */
  cores?: { source: number; destination: number };
  /** The image streams while CRIU writes it (the dump and the transfer overlap), else one after the other. */
  streamed: boolean;
  /**
   * Post-copy: the whole image is written locally, then only its process state (no lazy memory)
   * crosses the link and is restored; the memory follows after the blackout.
   */
  postCopy?: boolean;
}

export interface BlackoutPrediction {
  ms: number;
  dumpMs: number;
  transferMs: number;
  restoreMs: number;
  /** Dispatch of the frozen steps between workers (measured on these machines: ~50 ms a step). */
  orchestrationMs: number;
  imageBytes: number;
  linkMbit: number;
  /** Where the host rates came from: earlier moves on these hosts, or the defaults. */
  basis: string;
}

/** The fixed part of a dump (the freezer cgroup is polled every 100 ms) and of a restore. */
const DUMP_FIXED_MS = 150;
const RESTORE_FIXED_MS = 120;
/** Defaults, measured on these machines (PLATFORM.md): ~200 MB dumped in 140 ms, restored in 120 ms. */
const DEFAULT_DUMP_BYTES_PER_MS = 1_400_000;
const DEFAULT_RESTORE_BYTES_PER_MS = 600_000;
/** An image holds a little more than the memory: the process tree, files, sockets. */
const METADATA_BYTES_PER_MEMBER = 300 * 1024;
const ORCHESTRATION_MS = 150;
/** Post-copy: the lazy-pages daemon, the guard and the forward to the page server (measured: ~100 ms). */
const LAZY_SETUP_MS = 100;
/**
 * Post-copy: what one more member adds to the freeze, in CPU time (CRIU's fixed work, the image
 * split and the page server at the source; the lazy-pages daemon, its guard and the restore at
 * the destination), shared by the host's cores. Measured on these machines (2 cores) with
 * groups of 16 × 64 MiB: ~0.17 s of checkpoint and ~0.15 s of restore per member beyond the
 * first. A streamed freeze hides these under the per-byte work (its image crosses the link).
 */
const POSTCOPY_MEMBER_DUMP_CPU_MS = 340;
const POSTCOPY_MEMBER_RESTORE_CPU_MS = 300;
/** Samples below this size say little about the per-byte rate. */
const MIN_SAMPLE_BYTES = 8 << 20;

/** Median bytes per ms above the fixed part, over the samples big enough to tell. */
export function bytesPerMs(samples: RateSample[], fixedMs: number, fallback: number): { rate: number; from: number } {
  const rates = samples
    .filter((s) => s.bytes >= MIN_SAMPLE_BYTES && s.ms > fixedMs)
    .map((s) => s.bytes / (s.ms - fixedMs))
    .sort((a, b) => a - b);
  if (!rates.length) return { rate: fallback, from: 0 };
  const mid = rates.length >> 1;
  return { rate: rates.length % 2 ? rates[mid]! : (rates[mid - 1]! + rates[mid]!) / 2, from: rates.length };
}

/**
 * Dump and transfer (overlapped when the image streams while it is written), then restore, for
 * the whole group: the members' dumps share the source's cores, their images share the link,
 * their restores the destination's cores.
 */
export function predictBlackout(inputs: PredictionInputs): BlackoutPrediction {
  if (!(inputs.linkBytesPerMs > 0)) throw new Error(`a link rate is needed to predict (got ${inputs.linkBytesPerMs})`);
  const imageBytes = inputs.memberBytes.reduce((sum, b) => sum + b + METADATA_BYTES_PER_MEMBER, 0);
  const dump = bytesPerMs(inputs.dumps, DUMP_FIXED_MS, inputs.calibrated?.dumpBytesPerMs ?? DEFAULT_DUMP_BYTES_PER_MS);
  const restore = bytesPerMs(inputs.restores, RESTORE_FIXED_MS, inputs.calibrated?.restoreBytesPerMs ?? DEFAULT_RESTORE_BYTES_PER_MS);
  const othersShare = (cpuMs: number, cores: number | undefined) => (inputs.postCopy ? ((inputs.memberBytes.length - 1) * cpuMs) / Math.max(1, cores ?? 1) : 0);
  const dumpMs = DUMP_FIXED_MS + imageBytes / dump.rate + othersShare(POSTCOPY_MEMBER_DUMP_CPU_MS, inputs.cores?.source);
  // Post-copy sends and restores the process state only (the eager part: metadata, stacks).
  const frozenBytes = inputs.postCopy ? inputs.memberBytes.length * METADATA_BYTES_PER_MEMBER : imageBytes;
  const transferMs = frozenBytes / inputs.linkBytesPerMs;
  const restoreMs = RESTORE_FIXED_MS + (inputs.postCopy ? LAZY_SETUP_MS : 0) + frozenBytes / restore.rate + othersShare(POSTCOPY_MEMBER_RESTORE_CPU_MS, inputs.cores?.destination);
  const overlapped = inputs.streamed && !inputs.postCopy;
  const ms = (overlapped ? Math.max(dumpMs, transferMs) : dumpMs + transferMs) + restoreMs + ORCHESTRATION_MS;
  const basis = [
    dump.from ? `dump rate from ${dump.from} earlier dump(s) ${inputs.dumpsInMemory ? 'into memory ' : ''}at the source` : inputs.calibrated?.dumpBytesPerMs ? `dump rate ${inputs.dumpsInMemory ? 'into memory ' : ''}calibrated on the source's host` : 'default dump rate',
    restore.from ? `restore rate from ${restore.from} earlier restore(s) at the destination` : inputs.calibrated?.restoreBytesPerMs ? "restore rate calibrated on the destination's host" : 'default restore rate',
  ].join(', ');
  return {
    ms: Math.round(ms),
    dumpMs: Math.round(dumpMs),
    transferMs: Math.round(transferMs),
    restoreMs: Math.round(restoreMs),
    orchestrationMs: ORCHESTRATION_MS,
    imageBytes,
    linkMbit: Math.round((inputs.linkBytesPerMs * 8) / 1000),
    basis,
  };
}

/**
 * Mode "auto": post-copy when it is predicted shorter and can work — the destination offers the
 * image stream, and no member forks (CRIU's lazy pages stall on a fork in the window) — else
 * streamed. The reason names what decided.
 */
export function chooseMode(inputs: { streamedMs: number; postCopyMs: number; imageStream: boolean; forks: Array<{ name: string; fork: { pid: number; afterMs: number } | null }> }): { postCopy: boolean; reason: string } {
  const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
  if (!inputs.imageStream) return { postCopy: false, reason: 'the destination offers no image stream, which post-copy needs' };
  const forking = inputs.forks.find((f) => f.fork);
  if (forking) {
    return { postCopy: false, reason: `${forking.name}'s processes fork (process ${forking.fork!.pid} started ${s(forking.fork!.afterMs)} after its first), and post-copy stalls on forks (streamed predicted ${s(inputs.streamedMs)})` };
  }
  return inputs.postCopyMs < inputs.streamedMs
    ? { postCopy: true, reason: `post-copy predicted ${s(inputs.postCopyMs)} against ${s(inputs.streamedMs)} streamed` }
    : { postCopy: false, reason: `streamed predicted ${s(inputs.streamedMs)} against ${s(inputs.postCopyMs)} post-copy` };
}

/** Adds a sample to a host's list, keeping the latest few. */
export function withSample(samples: RateSample[], sample: RateSample, keep = 10): RateSample[] {
  return [...samples, sample].slice(-keep);
}
