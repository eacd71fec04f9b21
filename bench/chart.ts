/**
 * The benchmark's chart: median client-seen blackout per case and system, with the min–max range,
 * drawn by Vega-Lite (a declarative chart grammar rendered to SVG headless, no browser needed).
 */
import * as vega from 'vega';
import * as vl from 'vega-lite';
import type { BenchCase, Summary } from './results';

export async function blackoutChartSvg(summaries: Summary[], cases: BenchCase[], title: string): Promise<string> {
  const label = (id: string) => cases.find((c) => c.id === id)?.label ?? id;
  const values = summaries
    .filter((s) => s.blackoutMs.n > 0)
    .map((s) => ({ case: label(s.case), system: s.system, median: s.blackoutMs.median / 1000, min: s.blackoutMs.min / 1000, max: s.blackoutMs.max / 1000 }));
  const order = cases.map((c) => c.label);
  const spec: vl.TopLevelSpec = {
    title,
    width: { step: 28 },
    height: 320,
    data: { values },
    encoding: {
      x: { field: 'case', type: 'nominal', sort: order, title: null, axis: { labelAngle: 0 } },
      xOffset: { field: 'system', type: 'nominal' },
      color: { field: 'system', type: 'nominal', title: 'moved by', scale: { domain: ['migravi', 'postcopy', 'auto', 'floor', 'podman'], range: ['#1f77b4', '#2ca02c', '#9467bd', '#7f7f7f', '#ff7f0e'] } },
    },
    layer: [
      { mark: 'bar', encoding: { y: { field: 'median', type: 'quantitative', title: 'client-seen blackout, s (median of runs)' } } },
      { mark: { type: 'rule', color: 'black' }, encoding: { y: { field: 'min', type: 'quantitative' }, y2: { field: 'max' } } },
    ],
  };
  const view = new vega.View(vega.parse(vl.compile(spec).spec), { renderer: 'none' });
  return view.toSVG();
}
