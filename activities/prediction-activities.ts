/** What a group's blackout prediction needs from each side, measured just before its freeze. */
import { availableParallelism } from 'node:os';
import type { RateSample } from '../lib/prediction';
import type { ContainerSpec, TransferEndpoint } from '../lib/types';
import type { Attempt } from './attempt';
import type { CloudContext } from './cloud-context';
import { readHostCalibration } from '../lib/host-calibration';
import { readHostRates } from './host-rates';
import { probeLink } from './image-stream';

/**
 * Source: the memory each member's processes hold, this host's earlier dumps, and the link to
 * the destination, measured through the image stream with `probeBytes` of filler.
 */
async function measureForPrediction(
  here: CloudContext,
  input: { migrationId: string; containers: ContainerSpec[]; endpoint: TransferEndpoint; probeBytes: number; postCopy?: boolean; auto?: boolean },
  attempt: Attempt,
): Promise<{
  memberBytes: number[];
  dumps: RateSample[];
  dumpsInMemory: boolean;
  calibratedDumpBytesPerMs?: number;
  /** Both ways of dumping, for a plan whose mode is "auto": to disk (streamed) and where a post-copy dump would go. */
  streamedDumps: { dumps: RateSample[]; calibratedBytesPerMs?: number };
  postCopyDumps: { dumps: RateSample[]; inMemory: boolean; calibratedBytesPerMs?: number };
  /** Per member: a process started after its start-up (it forks), if any. */
  forks: Array<{ pid: number; afterMs: number } | null>;
  link: { bytes: number; ms: number };
  cores: number;
}> {
  const memberBytes = await Promise.all(input.containers.map((c) => here.runtime.memoryBytes(c.name)));
  const link = await probeLink({ endpoint: input.endpoint, privateKeyPath: here.cloud.transferKeyFor(input.endpoint.cloud), signal: attempt.signal, bytes: input.probeBytes });
  // The dumps to come go where checkpoint will put them: their earlier rates there are the ones that tell.
  const fitsInMemory = await here.imageFitsInMemory(Math.max(0, ...memberBytes));
  const dumpsInMemory = !!input.postCopy && fitsInMemory;
  const rates = await readHostRates(here.cloud.stateDir);
  const calibration = await readHostCalibration();
  const calibratedDumpBytesPerMs = dumpsInMemory ? calibration?.memoryDumpBytesPerMs : calibration?.dumpBytesPerMs;
  const forks = input.auto ? await Promise.all(input.containers.map(async (c) => (await here.runtime.lateStartedProcess(c.name)) ?? null)) : [];
  return {
    memberBytes,
    dumps: dumpsInMemory ? rates.memoryDumps : rates.dumps,
    dumpsInMemory,
    ...(calibratedDumpBytesPerMs ? { calibratedDumpBytesPerMs } : {}),
    streamedDumps: { dumps: rates.dumps, ...(calibration ? { calibratedBytesPerMs: calibration.dumpBytesPerMs } : {}) },
    postCopyDumps: { dumps: fitsInMemory ? rates.memoryDumps : rates.dumps, inMemory: fitsInMemory, ...(calibration ? { calibratedBytesPerMs: fitsInMemory ? calibration.memoryDumpBytesPerMs : calibration.dumpBytesPerMs } : {}) },
    forks,
    link,
    cores: availableParallelism(),
  };
}

/** Destination: how fast this host restored in earlier migrations (and as the set-up measured it). */
async function restoreRates(here: CloudContext, _input: Record<string, never>): Promise<{ restores: RateSample[]; calibratedRestoreBytesPerMs?: number; cores: number }> {
  const calibratedRestoreBytesPerMs = (await readHostCalibration())?.restoreBytesPerMs;
  return { restores: (await readHostRates(here.cloud.stateDir)).restores, ...(calibratedRestoreBytesPerMs ? { calibratedRestoreBytesPerMs } : {}), cores: availableParallelism() };
}

export const predictionActivities = { measureForPrediction, restoreRates };
