/** The report's time categories (the seed paper's Figure 1) and their chart. */
import assert from 'node:assert/strict';
import { categoryChartSvg } from '../../client/category-chart';
import { categorize } from '../../lib/report-categories';

const phase = (name: string, durationMs: number) => ({ phase: name, startedAt: 0, durationMs });

describe('time by category', () => {
  // A 500 ms migration whose phases take 408 ms: 92 ms of orchestration between them.
  const phases = [
    phase('inventory', 10), phase('preflight', 20), phase('network', 30), phase('prepare', 40), phase('pre-copy', 100),
    phase('checkpoint', 50), phase('transfer', 60), phase('restore', 70), phase('redirect', 5), phase('release', 15), phase('release-networks', 8),
  ];

  it('puts the freeze in "container migration" and the orchestration between phases in "others"', () => {
    const byName = Object.fromEntries(categorize(phases, 500).map((c) => [c.category, c.ms]));
    assert.deepEqual(byName, {
      'container migration': 180, // checkpoint 50 + transfer 60 + restore 70
      'network replication': 38, // network 30 + release of networks 8
      'inter-cloud communication and copies': 140, // prepare 40 + pre-copy 100
      redirect: 5,
      others: 137, // inventory 10 + preflight 20 + release 15 + 92 between phases
    });
    assert.equal(categorize(phases, 500)[0]!.share, 0.36);
  });

  it('draws one slice per category that took time, with a legend of shares and seconds', () => {
    const svg = categoryChartSvg(categorize(phases, 500), 'Migration "a<b" & co');
    assert.equal((svg.match(/<path /g) ?? []).length, 5);
    assert.match(svg, /container migration: 36\.0% \(0\.18 s\)/);
    assert.match(svg, /others: 27\.4% \(0\.14 s\)/);
    assert.match(svg, /Migration &quot;a&lt;b&quot; &amp; co/, 'the title is not escaped');
    assert.equal((svg.match(/<svg /g) ?? []).length, (svg.match(/<\/svg>/g) ?? []).length);
    // One category only: a full disc (an arc cannot draw a whole circle).
    const whole = categoryChartSvg(categorize([phase('restore', 100)], 100), 'x');
    assert.equal((whole.match(/<circle /g) ?? []).length, 1);
    assert.equal((whole.match(/<path /g) ?? []).length, 0);
  });
});
