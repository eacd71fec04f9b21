/**
 * A migration's time in the seed paper's categories (its Figure 1): the share of each kind of work
 * in the whole migration. Pure code: the workflow computes it for its report.
 */
import type { CategoryTime, PhaseTiming, TimeCategory } from './types';

export type { CategoryTime, TimeCategory } from './types';


const CATEGORY_OF: Record<string, TimeCategory> = {
  // The freeze: the only time the applications are unavailable.
  checkpoint: 'container migration',
  transfer: 'container migration',
  restore: 'container migration',
  'drain-setup': 'container migration',
  network: 'network replication',
  'release-networks': 'network replication',
  prepare: 'inter-cloud communication and copies',
  'pre-copy': 'inter-cloud communication and copies',
  redirect: 'redirect',
  drain: 'redirect',
};

export const CATEGORIES: TimeCategory[] = ['container migration', 'network replication', 'inter-cloud communication and copies', 'redirect', 'others'];

/**
 * Sums the phases per category; "others" holds the remaining phases (inventory, pre-flight, predict,
 * release, waiting for approval) and the orchestration time between phases (wall time not inside
 * any phase). Phases do not overlap (the workflow runs them one after the other).
 */
export function categorize(phases: PhaseTiming[], wallMs: number): CategoryTime[] {
  const totals = new Map<TimeCategory, { ms: number; phases: Set<string> }>(CATEGORIES.map((c) => [c, { ms: 0, phases: new Set<string>() }]));
  let inPhases = 0;
  for (const p of phases) {
    const entry = totals.get(CATEGORY_OF[p.phase] ?? 'others')!;
    entry.ms += p.durationMs;
    entry.phases.add(p.phase);
    inPhases += p.durationMs;
  }
  const others = totals.get('others')!;
  others.ms += Math.max(0, wallMs - inPhases);
  others.phases.add('(between phases)');
  return CATEGORIES.map((category) => {
    const { ms, phases: names } = totals.get(category)!;
    return { category, ms, share: wallMs > 0 ? ms / wallMs : 0, phases: [...names] };
  });
}
