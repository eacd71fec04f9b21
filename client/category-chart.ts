/**
 * The report's time categories drawn as a pie chart in SVG, like the seed paper's Figure 1.
 * Hand-written rather than a charting library: a pie of five slices is a few arcs, and the file
 * stays a static, dependency-free SVG any browser or viewer opens (libraries such as Vega or d3
 * would need a DOM or a renderer at run time for the same picture).
 */
import type { CategoryTime } from '../lib/types';

const COLORS = ['#d1495b', '#edae49', '#00798c', '#30638e', '#8d99ae'];

function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** A pie of the categories' shares with a legend (category, percent, seconds) and a title. */
export function categoryChartSvg(categories: CategoryTime[], title: string): string {
  const cx = 160;
  const cy = 170;
  const r = 120;
  const total = categories.reduce((sum, c) => sum + c.ms, 0);
  const slices: string[] = [];
  let angle = -Math.PI / 2;
  for (const [i, c] of categories.entries()) {
    if (c.ms <= 0 || total <= 0) continue;
    const sweep = (2 * Math.PI * c.ms) / total;
    const color = COLORS[i % COLORS.length]!;
    if (sweep >= 2 * Math.PI - 1e-9) {
      slices.push(`<circle cx="${cx}" cy="${cy}" r="${r}" fill="${color}"><title>${escapeXml(c.category)}</title></circle>`);
    } else {
      const [x1, y1] = [cx + r * Math.cos(angle), cy + r * Math.sin(angle)];
      const [x2, y2] = [cx + r * Math.cos(angle + sweep), cy + r * Math.sin(angle + sweep)];
      const large = sweep > Math.PI ? 1 : 0;
      slices.push(
        `<path d="M${cx},${cy} L${x1.toFixed(2)},${y1.toFixed(2)} A${r},${r} 0 ${large} 1 ${x2.toFixed(2)},${y2.toFixed(2)} Z" fill="${color}" stroke="#fff" stroke-width="1"><title>${escapeXml(c.category)}</title></path>`,
      );
    }
    angle += sweep;
  }
  const legend = categories.map((c, i) => {
    const y = 70 + i * 34;
    const label = `${c.category}: ${(c.share * 100).toFixed(1)}% (${(c.ms / 1000).toFixed(2)} s)`;
    return `<rect x="310" y="${y - 13}" width="16" height="16" fill="${COLORS[i % COLORS.length]!}"/><text x="334" y="${y}" font-size="14">${escapeXml(label)}</text>`;
  });
  return [
    '<svg xmlns="http://www.w3.org/2000/svg" width="720" height="320" viewBox="0 0 720 320" font-family="sans-serif">',
    '<rect width="720" height="320" fill="#fff"/>',
    `<text x="20" y="28" font-size="16" font-weight="bold">${escapeXml(title)}</text>`,
    ...slices,
    ...legend,
    '</svg>',
    '',
  ].join('\n');
}
