import assert from 'node:assert/strict';
import { bytesPerMs, predictBlackout, withSample } from '../../lib/prediction';

const MiB = 1 << 20;

describe('blackout prediction', () => {
  it('adds dump, transfer at the probed link rate, restore and dispatch; a streamed image overlaps dump and transfer', () => {
    const sequential = predictBlackout({ memberBytes: [256 * MiB], linkBytesPerMs: 125_000, dumps: [], restores: [], streamed: false });
    // 256 MiB + 300 KiB of metadata at 125 MB/s (1 Gbit/s) is 2150 ms.
    assert.equal(sequential.transferMs, Math.round((256 * MiB + 300 * 1024) / 125_000));
    assert.equal(sequential.linkMbit, 1000);
    assert.ok(Math.abs(sequential.ms - (sequential.dumpMs + sequential.transferMs + sequential.restoreMs + sequential.orchestrationMs)) <= 2);
    assert.match(sequential.basis, /default dump rate, default restore rate/);
    const streamed = predictBlackout({ memberBytes: [256 * MiB], linkBytesPerMs: 125_000, dumps: [], restores: [], streamed: true });
    assert.ok(Math.abs(streamed.ms - (Math.max(streamed.dumpMs, streamed.transferMs) + streamed.restoreMs + streamed.orchestrationMs)) <= 2);
    assert.ok(streamed.ms < sequential.ms);
  });

  it('learns the host rates from earlier dumps and restores, ignoring samples too small to tell', () => {
    // 100 MiB dumped in 150 + 100 ms: 1 MiB per ms above the fixed part; a 1 MiB sample says nothing.
    const dumps = [{ bytes: 100 * MiB, ms: 250 }, { bytes: MiB, ms: 900 }];
    assert.deepEqual(bytesPerMs(dumps, 150, 1), { rate: MiB, from: 1 });
    const p = predictBlackout({ memberBytes: [100 * MiB], linkBytesPerMs: 125_000, dumps, restores: [], streamed: false });
    assert.equal(p.dumpMs, Math.round(150 + (100 * MiB + 300 * 1024) / MiB));
    assert.match(p.basis, /dump rate from 1 earlier dump\(s\) at the source, default restore rate/);
  });

  it('post-copy: the dump stays whole, but only the process state crosses the link and is restored in the freeze', () => {
    const streamed = predictBlackout({ memberBytes: [1024 * MiB], linkBytesPerMs: 125_000, dumps: [], restores: [], streamed: true });
    const postCopy = predictBlackout({ memberBytes: [1024 * MiB], linkBytesPerMs: 125_000, dumps: [], restores: [], streamed: true, postCopy: true });
    assert.equal(postCopy.dumpMs, streamed.dumpMs);
    assert.equal(postCopy.transferMs, Math.round((300 * 1024) / 125_000));
    assert.ok(postCopy.restoreMs < streamed.restoreMs);
    assert.ok(Math.abs(postCopy.ms - (postCopy.dumpMs + postCopy.transferMs + postCopy.restoreMs + postCopy.orchestrationMs)) <= 2);
    assert.ok(postCopy.ms < streamed.ms / 3, `${postCopy.ms} ms post-copy vs ${streamed.ms} ms streamed for 1 GiB at 1 Gbit/s`);
  });

  it('post-copy: the fixed work of each further member of a group shares the hosts\' cores', () => {
    const one = predictBlackout({ memberBytes: [64 * MiB], linkBytesPerMs: 125_000, dumps: [], restores: [], streamed: true, postCopy: true, cores: { source: 2, destination: 2 } });
    const group = (cores: number) =>
      predictBlackout({ memberBytes: Array(16).fill(64 * MiB), linkBytesPerMs: 125_000, dumps: [], restores: [], streamed: true, postCopy: true, cores: { source: cores, destination: cores } });
    // 15 more members on 2 cores: 15 × 340 / 2 ms more checkpoint, 15 × 300 / 2 ms more restore (and their bytes).
    assert.ok(group(2).dumpMs - one.dumpMs >= 2550, `dump ${one.dumpMs} → ${group(2).dumpMs} ms`);
    assert.ok(group(2).restoreMs - one.restoreMs >= 2250, `restore ${one.restoreMs} → ${group(2).restoreMs} ms`);
    assert.ok(group(16).ms < group(2).ms - 3000, `16 cores: ${group(16).ms} ms, 2 cores: ${group(2).ms} ms`);
    // A streamed freeze is bound by its bytes: the cores do not change it.
    const streamed = (cores: number) => predictBlackout({ memberBytes: Array(16).fill(64 * MiB), linkBytesPerMs: 125_000, dumps: [], restores: [], streamed: true, cores: { source: cores, destination: cores } });
    assert.equal(streamed(2).ms, streamed(16).ms);
  });

  it('keeps the latest samples only', () => {
    let samples = [{ bytes: 1, ms: 1 }];
    for (let i = 2; i <= 12; i++) samples = withSample(samples, { bytes: i, ms: i });
    assert.deepEqual(samples.map((s) => s.bytes), [3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
  });

  it('refuses to predict without a link rate', () => {
    assert.throws(() => predictBlackout({ memberBytes: [MiB], linkBytesPerMs: NaN, dumps: [], restores: [], streamed: true }), /a link rate is needed/);
  });
});
