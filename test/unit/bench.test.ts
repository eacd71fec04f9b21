import assert from 'node:assert/strict';
import { unionMs } from '../../bench/history';
import { throughputMbit } from '../../bench/observers';
import { stat, summarize, verdicts, type BenchCase, type RunResult } from '../../bench/results';

const run = (over: Partial<RunResult>): RunResult => ({
  case: 'mem-64', system: 'migravi', run: 1, blackoutMs: 1000, freezeMs: 900, totalMs: 3000, phases: {}, imageBytes: 64 << 20, wanBytes: 65 << 20,
  transferMbit: 950, overheadMs: 90, cpuSeconds: 2, connectionsKept: true, memoryIntact: true, placedAtDestination: true, ...over,
});

describe('benchmark arithmetic', () => {
  it('median, min and max ignore runs that produced no number', () => {
    assert.deepEqual(stat([3, 1, NaN, 2]), { median: 2, min: 1, max: 3, n: 3 });
    assert.equal(stat([4, 1, 3, 2]).median, 2.5);
    assert.equal(stat([]).n, 0);
  });

  it('time inside activities counts overlapping activities once', () => {
    assert.equal(unionMs([[0, 10], [5, 20], [30, 40]]), 30);
    assert.equal(unionMs([[30, 40], [0, 10]]), 20);
    assert.equal(unionMs([]), 0);
  });

  it('link use counts the time bytes flowed in the window, not the idle part around it', () => {
    // Idle for 200 ms, then 12.5 MB in 100 ms (1 Gbit/s), then idle again.
    const samples = [0, 100, 200, 220, 240, 260, 280, 300, 400].map((at) => ({ at, sourceTx: 0, destinationRx: at <= 200 ? 0 : Math.min(at - 200, 100) * 125_000 }));
    assert.equal(Math.round(throughputMbit(samples, 0, 400)), 1000);
    assert.ok(Number.isNaN(throughputMbit(samples, 300, 400)), 'a window without traffic has no rate');
  });

  it('a failed run (lost connection, damaged memory) never enters the medians, and is counted', () => {
    const cases: BenchCase[] = [{ id: 'mem-64', label: '64 MiB', members: 1, ballastMiB: 64 }];
    const [s] = summarize([run({ blackoutMs: 100 }), run({ run: 2, blackoutMs: 5000, memoryIntact: false }), run({ run: 3, blackoutMs: 300 })], cases, ['migravi']);
    assert.equal(s!.blackoutMs.median, 200);
    assert.equal(s!.failures, 1);
  });

  it('targets are ratios of medians of the same run; a system not measured gives no verdict', () => {
    const cases: BenchCase[] = [{ id: 'mem-256', label: '256 MiB', members: 1, ballastMiB: 256 }];
    const results = [run({ case: 'mem-256', blackoutMs: 1800 }), run({ case: 'mem-256', system: 'floor', blackoutMs: 2000, overheadMs: undefined })];
    const v = verdicts(summarize(results, cases, ['migravi', 'floor']), cases, 1000);
    const floor = v.find((x) => x.target.includes('floor'))!;
    assert.equal(floor.value, '0.90×');
    assert.equal(floor.met, true);
    assert.ok(!v.some((x) => x.target.includes('Podman')));
    assert.equal(v.find((x) => x.target.includes('throughput'))!.met, true);
  });
});
