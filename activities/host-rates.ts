/**
 * How fast this host's CRIU dumped and restored in earlier migrations (the blackout prediction's
 * host rates), kept in the worker's state directory: a few latest samples of each.
 */
import { existsSync } from 'node:fs';
import { readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { withSample, type RateSample } from '../lib/prediction';

export interface HostRates {
  /** Dumps to disk. */
  dumps: RateSample[];
  /** Post-copy dumps kept in memory (tmpfs): a different, faster rate. */
  memoryDumps: RateSample[];
  restores: RateSample[];
}

const none = (): HostRates => ({ dumps: [], memoryDumps: [], restores: [] });

let writing: Promise<unknown> = Promise.resolve();

export async function readHostRates(stateDir: string): Promise<HostRates> {
  const file = path.join(stateDir, 'host-rates.json');
  if (!existsSync(file)) return none();
  try {
    return { ...none(), ...(JSON.parse(await readFile(file, 'utf8')) as Partial<HostRates>) };
  } catch {
    return none(); // a torn file only costs the history
  }
}

/** Records one dump or restore (one at a time per worker: parallel members would lose each other's). */
export function recordHostRate(stateDir: string, kind: keyof HostRates, sample: RateSample): Promise<void> {
  const next = writing.then(async () => {
    const rates = await readHostRates(stateDir);
    rates[kind] = withSample(rates[kind], sample);
    const file = path.join(stateDir, 'host-rates.json');
    await writeFile(`${file}.tmp`, JSON.stringify(rates));
    await rename(`${file}.tmp`, file);
  });
  writing = next.catch(() => undefined);
  return next;
}
