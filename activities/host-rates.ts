/**
 * How fast this host's CRIU dumped and restored in earlier migrations (the blackout prediction's
 * host rates), kept in the worker's state directory: a few latest samples of each.
 */
import { existsSync } from 'node:fs';
import { readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { withSample, type RateSample } from '../lib/prediction';

export interface HostRates {
  dumps: RateSample[];
  restores: RateSample[];
}

let writing: Promise<unknown> = Promise.resolve();

export async function readHostRates(stateDir: string): Promise<HostRates> {
  const file = path.join(stateDir, 'host-rates.json');
  if (!existsSync(file)) return { dumps: [], restores: [] };
  try {
    return JSON.parse(await readFile(file, 'utf8')) as HostRates;
  } catch {
    return { dumps: [], restores: [] }; // a torn file only costs the history
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
