/**
 * The set-up's measurement of this machine's CRIU rates (lib/host-calibration.ts), run for real:
 * a ballast process dumped to disk and into memory and restored at two sizes.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { calibrateHost, readHostCalibration, writeHostCalibration, type HostCalibration } from '../../lib/host-calibration';
import { criuPath, depsDir } from '../../lib/paths';

describe("the host calibration (CRIU's dump and restore rates on this machine)", function () {
  this.timeout(120_000);
  let dir: string;
  let memoryDir: string;
  let calibration: HostCalibration;
  const MiB = 1 << 20;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'migravi-calibration-'));
    memoryDir = await mkdtemp('/dev/shm/migravi-calibration-');
    calibration = await calibrateHost({ criu: criuPath, kvServer: path.join(depsDir, 'images', 'kv-server'), workDir: dir, memoryDir, sizesMiB: [16, 64], rounds: 1 });
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
    await rm(memoryDir, { recursive: true, force: true });
  });

  it('dumps the ballast whole at each size, to disk and into memory, and restores each disk image', () => {
    assert.deepEqual(calibration.runs.map((r) => r.kind), ['dump', 'restore', 'memory-dump', 'dump', 'restore', 'memory-dump']);
    for (const r of calibration.runs) {
      const mib = calibration.runs.indexOf(r) < 3 ? 16 : 64;
      // The image's pages hold the ballast the process was told to fill (and a few pages more).
      assert.ok(r.bytes >= mib * MiB && r.bytes < (mib + 4) * MiB, `${r.kind} of the ${mib} MiB ballast: ${r.bytes} bytes of pages`);
      assert.ok(r.ms > 0);
    }
  });

  it('gives per-byte rates a machine can have, from the difference between the sizes', () => {
    for (const rate of [calibration.dumpBytesPerMs, calibration.memoryDumpBytesPerMs, calibration.restoreBytesPerMs]) {
      // 20 MB/s to 50 GB/s: outside that, the measurement measured something else.
      assert.ok(rate > 20_000 && rate < 50_000_000, `${Math.round(rate / 1000)} MB/s`);
    }
  });

  it('leaves no image behind and stops every process it started (the restored one too)', async () => {
    assert.deepEqual(await readdir(dir), []);
    assert.deepEqual(await readdir(memoryDir), []);
    // kv-server processes on the machine that hold the calibration's ballast sizes are none of its (it started them with "0 16" and "0 64").
    const leftovers = (await readdir('/proc')).filter((p) => /^\d+$/.test(p)).filter((p) => {
      try {
        return /kv-server\x000\x00(16|64)\x00/.test(readFileSync(`/proc/${p}/cmdline`, 'latin1'));
      } catch {
        return false;
      }
    });
    assert.deepEqual(leftovers, []);
  });

  it('is written and read back whole; a torn or missing file gives none (the prediction then uses its defaults)', async () => {
    const file = path.join(dir, 'calibration.json');
    await writeHostCalibration(calibration, file);
    assert.deepEqual(await readHostCalibration(file), calibration);
    await rm(file);
    assert.equal(existsSync(file), false);
    assert.equal(await readHostCalibration(file), undefined);
  });
});
