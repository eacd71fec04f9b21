/**
 * Stage "redirect" of a group: its public names lead to its floating IPs at the destination
 * (through the cloud that serves each zone), before the commit, so a DNS service that fails here
 * rolls the group back — and the rollback points the names back at the source first.
 */
import type { ContainerStep } from '../../activities/cloud-activities';
import type { ContainerReport, DnsRecord } from '../../lib/types';
import { on } from './activity-stubs';
import { note, phase, type MigrationContext } from './context';

/** How long the DNS switch may take (retries included) before the group is rolled back. */
const DNS_SWITCH_MS = 20_000;

/** A group's DNS switch: whether it was attempted (a call that timed out may still have been applied). */
export interface DnsSwitch {
  attempted: boolean;
}

/** The A records pointing the containers' public names at the given addresses, grouped by the cloud and zone that serve them. */
function redirectRecords(steps: ContainerStep[], addressOf: (container: string) => string | undefined): Array<{ dnsCloud: string; zone: string; records: DnsRecord[] }> {
  const byZone = new Map<string, { dnsCloud: string; zone: string; records: Map<string, DnsRecord> }>();
  for (const step of steps) {
    const address = addressOf(step.container.name);
    if (!address) continue;
    for (const n of step.container.publicNames ?? []) {
      const key = `${n.dnsCloud}/${n.zone}`;
      const entry = byZone.get(key) ?? { dnsCloud: n.dnsCloud, zone: n.zone, records: new Map<string, DnsRecord>() };
      const record = entry.records.get(n.name) ?? { name: n.name, ttl: n.ttl, addresses: [] };
      record.addresses.push(address);
      entry.records.set(n.name, record);
      byZone.set(key, entry);
    }
  }
  return [...byZone.values()].map((e) => ({ dnsCloud: e.dnsCloud, zone: e.zone, records: [...e.records.values()] }));
}

/**
 * Before anything of the group changes: the undo that points its names back at the source's
 * addresses (run before the source resumes, bounded by the budget: workflows/saga.ts) — only
 * once a switch was attempted: a DNS service that is down must not hold up a rollback that never
 * touched it.
 */
export function recordDnsUndo(ctx: MigrationContext, steps: ContainerStep[]): DnsSwitch {
  const dnsSwitch: DnsSwitch = { attempted: false };
  for (const { dnsCloud, zone, records } of redirectRecords(steps, (name) => steps.find((s) => s.container.name === name)?.container.floatingIp?.address)) {
    ctx.saga.record({
      what: `point ${records.map((r) => r.name).join(', ')} back to ${ctx.plan.source}`,
      role: 'before-resume',
      cloud: dnsCloud,
      activity: 'setDnsRecords',
      input: { zone, records },
      needed: () => dnsSwitch.attempted,
    });
  }
  return dnsSwitch;
}

/** Points the group's names at its new floating IPs (nothing to do for a group without public names). */
export async function redirectGroup(ctx: MigrationContext, label: string, steps: ContainerStep[], reports: ContainerReport[], dnsSwitch: DnsSwitch): Promise<void> {
  const toDestination = redirectRecords(steps, (name) => reports.find((r) => r.name === name)?.floatingIp?.destination);
  if (!toDestination.length) return;
  await phase(ctx, 'redirect', label, async () => {
    const started = Date.now();
    for (const { dnsCloud, zone, records } of toDestination) {
      dnsSwitch.attempted = true;
      await on(dnsCloud, { scheduleToCloseMs: DNS_SWITCH_MS }).setDnsRecords({ zone, records });
      note(ctx, `DNS ${zone} at ${dnsCloud}: ${records.map((r) => `${r.name} → ${r.addresses.join(', ')}`).join('; ')}`);
    }
    ctx.report.dnsSwitchMs = (ctx.report.dnsSwitchMs ?? 0) + Date.now() - started;
  });
}
