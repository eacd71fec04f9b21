/** What a group's blackout prediction needs from each side, measured just before its freeze. */
import { availableParallelism } from 'node:os';
import type { RateSample } from '../lib/prediction';
import type { ContainerSpec, TransferEndpoint } from '../lib/types';
import type { Attempt } from './attempt';
import type { CloudContext } from './cloud-context';
import { readHostRates } from './host-rates';
import { probeLink } from './image-stream';

/**
 * Source: the memory each member's processes hold, this host's earlier dumps, and the link to
 * the destination, measured through the image stream with `probeBytes` of filler.
 */
async function measureForPrediction(
  here: CloudContext,
  input: { migrationId: string; containers: ContainerSpec[]; endpoint: TransferEndpoint; probeBytes: number; postCopy?: boolean },
  attempt: Attempt,
): Promise<{ memberBytes: number[]; dumps: RateSample[]; dumpsInMemory: boolean; link: { bytes: number; ms: number }; cores: number }> {
  const memberBytes = await Promise.all(input.containers.map((c) => here.runtime.memoryBytes(c.name)));
  const link = await probeLink({ endpoint: input.endpoint, privateKeyPath: here.cloud.transferKeyFor(input.endpoint.cloud), signal: attempt.signal, bytes: input.probeBytes });
  // The dumps to come go where checkpoint will put them: their earlier rates there are the ones that tell.
  const dumpsInMemory = !!input.postCopy && (await here.imageFitsInMemory(Math.max(0, ...memberBytes)));
  const rates = await readHostRates(here.cloud.stateDir);
  return { memberBytes, dumps: dumpsInMemory ? rates.memoryDumps : rates.dumps, dumpsInMemory, link, cores: availableParallelism() };
}

/** Destination: how fast this host restored in earlier migrations. */
async function restoreRates(here: CloudContext, _input: Record<string, never>): Promise<{ restores: RateSample[]; cores: number }> {
  return { restores: (await readHostRates(here.cloud.stateDir)).restores, cores: availableParallelism() };
}

export const predictionActivities = { measureForPrediction, restoreRates };
