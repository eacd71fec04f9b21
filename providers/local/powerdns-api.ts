/**
 * A client of PowerDNS's HTTP API (/api/v1/servers/localhost): the embedded cloud's DNS service.
 * Record changes are atomic per call (PowerDNS applies all rrsets of a PATCH or none).
 */
import { readFile } from 'node:fs/promises';
import type { DnsRecord } from '../../lib/types';

export class PowerDnsApi {
  constructor(private readonly cfg: { apiUrl: string; apiKeyPath: string }) {}

  private async call(method: string, route: string, body?: unknown): Promise<unknown> {
    const key = (await readFile(this.cfg.apiKeyPath, 'utf8')).trim();
    let response: Response;
    try {
      response = await fetch(`${this.cfg.apiUrl}${route}`, {
        method,
        headers: { 'X-API-Key': key, ...(body ? { 'Content-Type': 'application/json' } : {}) },
        ...(body ? { body: JSON.stringify(body) } : {}),
        signal: AbortSignal.timeout(5_000),
      });
    } catch (err) {
      throw new Error(`the DNS service does not answer at ${this.cfg.apiUrl}: ${(err as Error).message}`);
    }
    const text = await response.text();
    if (!response.ok) {
      const reason = (() => {
        try {
          return (JSON.parse(text) as { error?: string }).error ?? text;
        } catch {
          return text;
        }
      })();
      throw new Error(`DNS service: ${method} ${route} → ${response.status} ${reason}`);
    }
    return text ? (JSON.parse(text) as unknown) : undefined;
  }

  async zones(): Promise<string[]> {
    return ((await this.call('GET', '/zones')) as Array<{ name: string }>).map((z) => z.name).sort();
  }

  async records(zone: string): Promise<DnsRecord[]> {
    const detail = (await this.call('GET', `/zones/${zone}`)) as { rrsets: Array<{ name: string; type: string; ttl: number; records: Array<{ content: string }> }> };
    return detail.rrsets.filter((r) => r.type === 'A').map((r) => ({ name: r.name, ttl: r.ttl, addresses: r.records.map((c) => c.content).sort() }));
  }

  async replace(zone: string, records: DnsRecord[]): Promise<void> {
    await this.call('PATCH', `/zones/${zone}`, {
      rrsets: records.map((r) => ({ name: r.name, type: 'A', ttl: r.ttl, changetype: 'REPLACE', records: r.addresses.map((content) => ({ content, disabled: false })) })),
    });
  }

  async delete(zone: string, names: string[]): Promise<void> {
    await this.call('PATCH', `/zones/${zone}`, { rrsets: names.map((name) => ({ name, type: 'A', changetype: 'DELETE' })) });
  }
}
