/**
 * How real applications' memory compresses, next to the benchmark's ballast (which is
 * incompressible by construction): the demo VI's nginx, PostgreSQL (after taking writes) and its
 * psql writer are checkpointed in a throwaway testbed and their images measured as the
 * benchmark measures the floor's (bench/compression.ts). Prints the table.
 *
 *   node dist/bench/compression-apps.js [--wan-mbit 1000] [--rows 400]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { deployVi } from '../activities/deploy-vi';
import { loadDemoVi } from '../demo/demo-vi';
import { run } from '../lib/exec';
import { criuPath, testbedsDir } from '../lib/paths';
import { waitFor } from '../lib/processes';
import { openLocalCloud } from '../providers/local/local-cloud';
import { testbedDown, testbedUp } from '../providers/local/testbed';
import { compressionTable, measureCompression, type CompressionSample } from './compression';

const TESTBED_ID = 'mvcomp';
const APPS = ['web', 'db', 'app'];

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { 'wan-mbit': { type: 'string', default: '1000' }, rows: { type: 'string', default: '400' } } });
  const linkMbit = Number(values['wan-mbit']);
  const rows = Number(values.rows);
  if (!(linkMbit > 0) || !(rows >= 0)) throw new Error('--wan-mbit and --rows: positive numbers');
  const stateDir = path.join(testbedsDir, TESTBED_ID);
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'migravi-compression-'));
  await testbedDown(stateDir, TESTBED_ID);
  try {
    const record = await testbedUp({ id: TESTBED_ID, stateDir, clouds: ['cloud-a', 'cloud-b'], wanGateway: '203.0.113.1', wanPrefixLength: 25, wanRateMbit: linkMbit, criuPath, hostLink: '198.18.0.20/30' });
    const cloud = openLocalCloud(stateDir, record.clouds[0]!.name);
    await deployVi(cloud, await loadDemoVi({ only: APPS, volumeRoot: path.join(tmp, 'volumes') }));
    // PostgreSQL's memory after some work: the writer's rows counted by the database itself.
    const runcArgs = ['--root', path.join(record.clouds[0]!.dir, 'runc')];
    const count = async () => {
      const r = await run('runc', [...runcArgs, 'exec', 'db', '/usr/lib/postgresql/15/bin/psql', '-h', '127.0.0.1', '-U', 'postgres', '-tAc', 'SELECT count(*) FROM ticks'], { allowFailure: true });
      return r.exitCode === 0 ? Number(r.stdout.trim()) : 0;
    };
    await waitFor(`${rows} rows in PostgreSQL`, async () => (await count()) >= rows, 120_000, 250);
    const samples: Array<{ label: string; samples: CompressionSample[] }> = [];
    for (const name of APPS) {
      const imageDir = path.join(tmp, `image-${name}`);
      await cloud.runtime.checkpoint(name, imageDir, true);
      samples.push({ label: name, samples: await measureCompression(imageDir, path.join(tmp, 'packed')) });
    }
    console.log(`\nCompression of real applications' checkpoints (demo VI, PostgreSQL after ${rows}+ rows; one core each way):\n\n${compressionTable(samples, linkMbit)}\n`);
  } finally {
    await testbedDown(stateDir, TESTBED_ID);
    await rm(tmp, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(`compression-apps failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
