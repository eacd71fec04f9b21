/**
 * Measures this machine's CRIU dump and restore rates for the blackout prediction (lib/host-calibration.ts).
 * The set-up runs it; a calibration of the same CRIU is kept unless --force.
 *   node dist/scripts/calibrate-host.js [--force] [--file /var/lib/migravi/host-calibration.json]
 */
import { parseArgs } from 'node:util';
import path from 'node:path';
import { run } from '../lib/exec';
import { calibrateHost, HOST_CALIBRATION_FILE, readHostCalibration, writeHostCalibration } from '../lib/host-calibration';
import { criuPath, depsDir } from '../lib/paths';

const mbps = (bytesPerMs: number) => `${Math.round(bytesPerMs / 1000)} MB/s`;

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { force: { type: 'boolean', default: false }, file: { type: 'string', default: HOST_CALIBRATION_FILE } } });
  const criu = (await run(criuPath, ['--version'])).stdout.split('\n')[0]!.trim();
  const earlier = await readHostCalibration(values.file);
  if (earlier && earlier.criu === criu && !values.force) {
    console.log(`kept (${earlier.at}, ${criu}): dump ${mbps(earlier.dumpBytesPerMs)}, into memory ${mbps(earlier.memoryDumpBytesPerMs)}, restore ${mbps(earlier.restoreBytesPerMs)}`);
    return;
  }
  const calibration = await calibrateHost({ criu: criuPath, kvServer: path.join(depsDir, 'images', 'kv-server'), workDir: path.join(path.dirname(values.file), 'calibration'), memoryDir: '/dev/shm' });
  await writeHostCalibration(calibration, values.file);
  console.log(`measured (${criu}, ${calibration.runs.length} runs): dump ${mbps(calibration.dumpBytesPerMs)}, into memory ${mbps(calibration.memoryDumpBytesPerMs)}, restore ${mbps(calibration.restoreBytesPerMs)} -> ${values.file}`);
}

main().catch((err: unknown) => {
  console.error(`calibrate-host: ${(err as Error).message}`);
  process.exit(1);
});
