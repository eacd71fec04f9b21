import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { readHostRates, recordHostRate } from '../../activities/host-rates';

describe('host rates (the prediction\'s history of dumps and restores)', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'migravi-rates-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('keeps dumps to disk and dumps into memory apart, and reads a file written before the latter existed', async () => {
    await writeFile(path.join(dir, 'host-rates.json'), JSON.stringify({ dumps: [{ bytes: 1, ms: 1 }], restores: [] }));
    assert.deepEqual(await readHostRates(dir), { dumps: [{ bytes: 1, ms: 1 }], memoryDumps: [], restores: [] });
    await Promise.all([
      recordHostRate(dir, 'memoryDumps', { bytes: 2, ms: 2 }),
      recordHostRate(dir, 'dumps', { bytes: 3, ms: 3 }),
      recordHostRate(dir, 'restores', { bytes: 4, ms: 4 }),
    ]);
    assert.deepEqual(await readHostRates(dir), { dumps: [{ bytes: 1, ms: 1 }, { bytes: 3, ms: 3 }], memoryDumps: [{ bytes: 2, ms: 2 }], restores: [{ bytes: 4, ms: 4 }] });
  });

  it('starts empty without a file, and after a torn one', async () => {
    assert.deepEqual(await readHostRates(dir), { dumps: [], memoryDumps: [], restores: [] });
    await writeFile(path.join(dir, 'host-rates.json'), '{"dumps": [');
    assert.deepEqual(await readHostRates(dir), { dumps: [], memoryDumps: [], restores: [] });
  });
});
