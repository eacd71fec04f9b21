import assert from 'node:assert/strict';
import { bytesPerMs, chooseMode, predictBlackout, withSample } from '../../lib/prediction';

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

  it("uses the rates the set-up measured on each host until the hosts have migrations of their own", () => {
    const calibrated = { dumpBytesPerMs: MiB / 2, restoreBytesPerMs: MiB };
    const p = predictBlackout({ memberBytes: [100 * MiB], linkBytesPerMs: 125_000, dumps: [], restores: [], calibrated, streamed: false });
    assert.equal(p.dumpMs, Math.round(150 + (100 * MiB + 300 * 1024) / (MiB / 2)));
    assert.equal(p.restoreMs, Math.round(120 + (100 * MiB + 300 * 1024) / MiB));
    assert.match(p.basis, /dump rate calibrated on the source's host, restore rate calibrated on the destination's host/);
    // An earlier dump on this host wins over the calibration (it is the runtime's own rate).
    const learned = predictBlackout({ memberBytes: [100 * MiB], linkBytesPerMs: 125_000, dumps: [{ bytes: 100 * MiB, ms: 250 }], restores: [], calibrated, streamed: false });
    assert.equal(learned.dumpMs, Math.round(150 + (100 * MiB + 300 * 1024) / MiB));
    assert.match(learned.basis, /dump rate from 1 earlier dump\(s\) at the source, restore rate calibrated/);
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

  it('mode "auto": post-copy when predicted shorter, streamed when a member forks or the destination has no image stream', () => {
    const none = [{ name: 'kv', fork: null }];
    assert.deepEqual(chooseMode({ streamedMs: 963, postCopyMs: 551, imageStream: true, forks: none }), { postCopy: true, reason: 'post-copy predicted 0.55 s against 0.96 s streamed' });
    assert.deepEqual(chooseMode({ streamedMs: 474, postCopyMs: 540, imageStream: true, forks: none }), { postCopy: false, reason: 'streamed predicted 0.47 s against 0.54 s post-copy' });
    const forking = chooseMode({ streamedMs: 2000, postCopyMs: 600, imageStream: true, forks: [...none, { name: 'db', fork: { pid: 42, afterMs: 35_200 } }] });
    assert.equal(forking.postCopy, false);
    assert.match(forking.reason, /^db's processes fork \(process 42 started 35\.20 s after its first\), and post-copy stalls on forks/);
    assert.deepEqual(chooseMode({ streamedMs: 2000, postCopyMs: 600, imageStream: false, forks: none }), { postCopy: false, reason: 'the destination offers no image stream, which post-copy needs' });
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
