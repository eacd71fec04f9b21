/**
 * What `migravi migrate` prints while it follows a migration outside a terminal, and the estimate
 * of a tar stream's size the progress bars use for a root filesystem, checked against tar itself.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { estimateTarBytes, tarDirectory } from '../../activities/artifacts';
import type { LiveProgress } from '../../client/live-progress';
import { describeTransfer, progressView } from '../../client/progress-view';

function sample(phase: string, sentBytes?: number): LiveProgress {
  return {
    state: 'running',
    phase,
    container: 'kv',
    phases: [],
    bytesMoved: 0,
    containers: [
      {
        name: 'kv',
        state: 'moving',
        phase,
        bytesMoved: 0,
        transfers: sentBytes === undefined ? [] : [{ kind: 'checkpoint', activity: 'checkpoint', sentBytes, totalBytes: 64 << 20, rateBytesPerSecond: 12_500_000, etaSeconds: ((64 << 20) - sentBytes) / 12_500_000 }],
      },
      { name: 'db', state: 'waiting', phase: 'waiting', bytesMoved: 0, transfers: [] },
    ],
  };
}

describe('progress: plain lines off a terminal, and the size of a tar stream', () => {
  it('says each stage of each container once, and a running copy with its size, rate and time left', () => {
    const sink = new PassThrough();
    let text = '';
    sink.on('data', (d: Buffer) => (text += d.toString()));
    const view = progressView(sink as unknown as NodeJS.WriteStream); // not a TTY: lines
    view.update(sample('prepare'));
    view.update(sample('prepare'));
    view.update(sample('checkpoint', 16 << 20));
    view.update(sample('checkpoint', 32 << 20)); // within 2 s of the last: not repeated
    view.stop();
    assert.deepEqual(text.trimEnd().split('\n'), [
      '  migration running',
      '  kv: prepare',
      '  db: waiting',
      '  kv: checkpoint',
      '  kv: checkpoint 16.0 of 64.0 MiB, 100 Mbit/s, 5 s left',
    ]);
  });

  it('describes a copy whose size is not known yet by its bytes alone', () => {
    assert.equal(describeTransfer({ kind: 'rootfs', activity: 'sendRootfs', sentBytes: 3 << 20 }), 'rootfs 3.0 MiB');
  });

  it('estimates the tar stream of a directory within a few percent of what tar writes', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'migravi-tar-'));
    try {
      await mkdir(path.join(dir, 'etc', 'deep'), { recursive: true });
      for (let i = 0; i < 40; i++) await writeFile(path.join(dir, 'etc', `f${i}`), Buffer.alloc(i * 1531 + 7, i));
      await writeFile(path.join(dir, 'etc', 'deep', 'big'), Buffer.alloc(3 << 20, 1));
      await writeFile(path.join(dir, 'empty'), '');
      await symlink('etc/f1', path.join(dir, 'link'));
      const tar = tarDirectory(dir);
      let written = 0;
      tar.stream.on('data', (d: Buffer) => (written += d.length));
      await tar.finished;
      const estimate = await estimateTarBytes(dir);
      assert.ok(Math.abs(estimate - written) / written < 0.02, `estimated ${estimate} bytes, tar wrote ${written}`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
