/** Renders a migration report for a terminal (CLI, demo). */
import type { MigrationReport } from '../lib/types';

/** What a client that kept one connection open saw (the demo's client records this). */
export interface ConnectionWitness {
  localPort?: number;
  lastValue?: number;
  discontinuities: number;
  maxGapMs: number;
  error?: string;
}

const ms = (n: number) => `${n.toFixed(0)} ms`;
const mib = (bytes: number) => `${(bytes / 1048576).toFixed(2)} MiB`;

/** A client that held one connection to a service through the migration. */
export interface ClientWitness {
  service: string;
  before: ConnectionWitness;
  after: ConnectionWitness;
}

export function formatReport(
  report: MigrationReport,
  extra: { clients?: ClientWitness[]; placement?: Record<string, Record<string, string>>; notes?: string[] } = {},
): string {
  const lines: string[] = [];
  lines.push(`Migration "${report.plan}": ${report.source} -> ${report.destination}, wall time ${ms(report.wallMs)}`);
  lines.push('');
  lines.push('  phase          container   duration   share');
  for (const p of report.phases) {
    lines.push(`  ${p.phase.padEnd(14)} ${(p.container ?? '-').padEnd(11)} ${ms(p.durationMs).padStart(9)}  ${((100 * p.durationMs) / report.wallMs).toFixed(1).padStart(5)}%`);
  }
  const sum = report.phases.reduce((s, p) => s + p.durationMs, 0);
  lines.push(`  ${'(sum)'.padEnd(14)} ${''.padEnd(11)} ${ms(sum).padStart(9)}`);
  lines.push('');
  lines.push('  time by category (the seed paper\'s Figure 1):');
  for (const c of report.categories ?? []) lines.push(`    ${c.category.padEnd(38)} ${ms(c.ms).padStart(9)}  ${(c.share * 100).toFixed(1).padStart(5)}%`);
  lines.push('');
  for (const c of report.containers) {
    const imageCheck = c.checks.find((k) => k.kind === 'checkpoint');
    lines.push(`  ${c.name}: frozen ${ms(c.frozenMs)} (CRIU dump ${ms(c.checkpointMs)}; at destination: verify ${ms(imageCheck?.verifyMs ?? 0)} ${imageCheck?.method === 'in-flight' ? '(digests computed as the bytes arrived)' : '(re-read at rest)'}, CRIU restore ${ms(c.restoreMs)}), image ${mib(c.imageBytes)}`);
    for (const a of c.artifacts) {
      const rate = ((a.wireBytes * 8) / 1e6 / Math.max(a.durationMs / 1000, 0.001)).toFixed(0);
      lines.push(`    ${a.kind.padEnd(10)} ${mib(a.bytes).padStart(10)} sent as ${mib(a.wireBytes)} on the link in ${ms(a.durationMs).padStart(8)}  ${rate} Mbit/s`);
    }
    for (const k of c.checks) {
      lines.push(`    checked at ${report.destination}: ${k.kind} ${k.files} file(s), ${mib(k.verifiedBytes)} re-hashed, sha256 ${k.recomputedSha256.slice(0, 16)}… = sender's`);
    }
    if (c.postCopy) {
      const p = c.postCopy;
      lines.push(
        `    post-copy: ${mib(p.lazyBytes)} of memory followed the restore in ${ms(p.windowMs)} (pages fetched on demand from the source's image)` +
          (p.rescuedPages ? `; ${p.rescuedPages} pages copied in by the worker after: ${p.recoveries.join('; ')}` : '') +
          (p.droppedPages ? `; ${p.droppedPages} pages the process dropped meanwhile` : ''),
      );
    }
    if (c.volumes) {
      const v = c.volumes;
      lines.push(`    volumes (${v.volumes}): ${mib(v.preBytes)} in ${v.preEntries} entries copied while it ran; inside the freeze ${mib(v.finalBytes)} in ${v.finalEntries} changed entries (+${v.deletedEntries} deleted), ${ms(v.finalMs)}`);
    }
    if (c.floatingIp) lines.push(`    floating IP ${c.floatingIp.source ?? '-'} (${report.source}) -> ${c.floatingIp.destination ?? '-'} (${report.destination})`);
    if (c.resends) lines.push(`    ${c.resends} artifact(s) arrived corrupt and were sent again`);
  }
  for (const g of report.groups) {
    const members = report.containers.filter((c) => g.containers.includes(c.name)).map((c) => `${c.name} ${ms(c.frozenMs)}`);
    lines.push(`  group ${g.containers.join(', ')}: frozen together for ${ms(g.frozenMs)} (${members.join(', ')})`);
    if (g.mode) lines.push(`    ${g.mode}: ${g.modeReason ?? ''}`);
    if (g.predicted) {
      const p = g.predicted;
      lines.push(`    predicted before the freeze: ${ms(p.ms)} (dump ${ms(p.dumpMs)}, transfer ${ms(p.transferMs)} at ${p.linkMbit} Mbit/s, restore ${ms(p.restoreMs)}; ${p.basis}): ${g.frozenMs >= p.ms ? '+' : ''}${Math.round((100 * (g.frozenMs - p.ms)) / p.ms)} % measured`);
    }
  }
  lines.push(`  bytes written to the WAN link for artifacts (all attempts): ${report.bytesMoved} (${mib(report.bytesMoved)})`);
  for (const e of report.events) lines.push(`  event: ${e}`);
  for (const { service, before, after } of extra.clients ?? []) {
    const same = before.localPort === after.localPort && !after.error;
    lines.push('');
    lines.push(`  ${service}: client connection ${same ? 'SAME' : 'BROKEN'} (local port ${before.localPort} -> ${after.localPort}${after.error ? `, ${after.error}` : ''})`);
    lines.push(`    counter: ${before.lastValue} before, ${after.lastValue} after, ${after.discontinuities} discontinuities (0 = memory state carried over)`);
    lines.push(`    the client's longest gap between replies (the blackout it saw): ${ms(after.maxGapMs)}`);
  }
  if (extra.notes?.length) lines.push('');
  for (const note of extra.notes ?? []) lines.push(`  ${note}`);
  for (const [container, where] of Object.entries(extra.placement ?? {})) {
    lines.push(`  container ${container}: ${Object.entries(where).map(([cloud, s]) => `${cloud} ${s}`).join(', ')}`);
  }
  for (const w of report.warnings) lines.push(`  warning: ${w}`);
  return lines.join('\n');
}
