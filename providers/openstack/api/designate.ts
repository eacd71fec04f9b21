/**
 * Designate v2: zones and their recordsets. Designate answers 202 and applies a change later on
 * its DNS servers (status PENDING, then ACTIVE or ERROR): the waits here say which it came to.
 */
import type { EndpointOptions } from './catalog';
import type { DeleteOptions, OpenStackHttp } from './http';
import type { KeystoneSession } from './keystone';
import { pollUntil } from './poll';
import type { Verdict, WaitOptions } from './poll';

export type DesignateStatus = 'PENDING' | 'ACTIVE' | 'ERROR';
export type DesignateAction = 'CREATE' | 'UPDATE' | 'DELETE' | 'NONE';

export interface Zone {
  id: string;
  /** Absolute: ends in '.'. */
  name: string;
  email: string;
  ttl: number;
  serial: number;
  status: DesignateStatus;
  action: DesignateAction;
  type: 'PRIMARY' | 'SECONDARY';
  project_id: string;
  description: string | null;
}

export interface ZoneSpec {
  name: string;
  /** The zone's administrator, for its SOA record. */
  email: string;
  ttl?: number;
  description?: string;
}

export interface Recordset {
  id: string;
  zone_id: string;
  zone_name: string;
  /** Absolute: ends in '.'. */
  name: string;
  type: string;
  records: string[];
  /** null: the zone's TTL. */
  ttl: number | null;
  status: DesignateStatus;
  action: DesignateAction;
  description: string | null;
}

export interface RecordsetSpec {
  /** Absolute, inside the zone ('web.example.org.'); a missing final '.' is added. */
  name: string;
  type: 'A' | 'AAAA' | 'CNAME' | 'TXT' | 'MX' | 'SRV' | 'PTR' | 'NS' | 'CAA';
  records: string[];
  ttl?: number;
  description?: string;
}

/** Designate stores absolute names; a name without its final dot would match nothing. */
export const absoluteName = (name: string): string => (name.endsWith('.') ? name : `${name}.`);

const ACTIVE_DEFAULTS = { timeoutMs: 120_000, intervalMs: 1_000 };

function judge<T extends { status: DesignateStatus; action: DesignateAction }>(describe: (value: T) => string) {
  return (value: T): Verdict => {
    if (value.status === 'ACTIVE') return { state: 'done' };
    if (value.status === 'ERROR') return { state: 'failed', reason: `${describe(value)} is ERROR (action ${value.action}): Designate could not apply it on its DNS servers` };
    return { state: 'pending', seen: `${describe(value)} ${value.status} (action ${value.action})` };
  };
}

const gone = (describe: string) => (value: { status: DesignateStatus; action: DesignateAction } | undefined): Verdict => {
  if (!value) return { state: 'done' };
  if (value.status === 'ERROR') return { state: 'failed', reason: `${describe} is ERROR (action ${value.action}): Designate could not delete it` };
  return { state: 'pending', seen: `${describe} ${value.status} (action ${value.action})` };
};

export class DesignateClient {
  private readonly http: OpenStackHttp;

  constructor(session: KeystoneSession, endpoint: EndpointOptions = {}) {
    this.http = session.client('designate', 'dns', endpoint);
  }

  // Zones

  listZones(filter: { name?: string } = {}): Promise<Zone[]> {
    return this.http.listAll<Zone>('/zones', 'zones', { query: filter.name !== undefined ? { name: absoluteName(filter.name) } : {} });
  }

  async findZone(name: string): Promise<Zone | undefined> {
    return (await this.listZones({ name }))[0];
  }

  getZone(id: string): Promise<Zone> {
    return this.http.get<Zone>(`/zones/${id}`, { resource: `zone ${id}` });
  }

  /** The zone is PENDING until Designate's DNS servers have it: see waitForZone. */
  createZone(spec: ZoneSpec): Promise<Zone> {
    const zone = { ...spec, name: absoluteName(spec.name) };
    return this.http.post<Zone>('/zones', zone, { resource: `zone "${zone.name}"` });
  }

  /** Deletes the zone with its recordsets; see waitForZoneDeleted. */
  deleteZone(id: string, opts: DeleteOptions = {}): Promise<boolean> {
    return this.http.delete(`/zones/${id}`, { ...opts, resource: `zone ${id}` });
  }

  waitForZone(id: string, wait: WaitOptions = {}): Promise<Zone> {
    return pollUntil(`zone ${id} to be ACTIVE`, () => this.getZone(id), judge<Zone>((z) => `zone "${z.name}"`), wait, ACTIVE_DEFAULTS);
  }

  async waitForZoneDeleted(id: string, wait: WaitOptions = {}): Promise<void> {
    const probe = () => this.http.getIfExists<Zone>(`/zones/${id}`, { resource: `zone ${id}` });
    await pollUntil(`zone ${id} to be deleted`, probe, gone(`zone ${id}`), wait, ACTIVE_DEFAULTS);
  }

  // Recordsets

  listRecordsets(zoneId: string, filter: { name?: string; type?: string } = {}): Promise<Recordset[]> {
    const query = { ...filter, ...(filter.name !== undefined ? { name: absoluteName(filter.name) } : {}) };
    return this.http.listAll<Recordset>(`/zones/${zoneId}/recordsets`, 'recordsets', { query, resource: `recordsets of zone ${zoneId}` });
  }

  /** A zone has at most one recordset of a name and type. */
  async findRecordset(zoneId: string, name: string, type: string): Promise<Recordset | undefined> {
    const found = await this.listRecordsets(zoneId, { name, type });
    return found.find((r) => r.name === absoluteName(name) && r.type === type);
  }

  createRecordset(zoneId: string, spec: RecordsetSpec): Promise<Recordset> {
    const recordset = { ...spec, name: absoluteName(spec.name) };
    return this.http.post<Recordset>(`/zones/${zoneId}/recordsets`, recordset, { resource: `${spec.type} recordset "${recordset.name}" in zone ${zoneId}` });
  }

  /** The records replace the recordset's. */
  updateRecordset(zoneId: string, id: string, update: { records: string[]; ttl?: number | null }): Promise<Recordset> {
    return this.http.put<Recordset>(`/zones/${zoneId}/recordsets/${id}`, update, { resource: `recordset ${id} in zone ${zoneId}` });
  }

  deleteRecordset(zoneId: string, id: string, opts: DeleteOptions = {}): Promise<boolean> {
    return this.http.delete(`/zones/${zoneId}/recordsets/${id}`, { ...opts, resource: `recordset ${id} in zone ${zoneId}` });
  }

  waitForRecordset(zoneId: string, id: string, wait: WaitOptions = {}): Promise<Recordset> {
    const probe = () => this.http.get<Recordset>(`/zones/${zoneId}/recordsets/${id}`, { resource: `recordset ${id} in zone ${zoneId}` });
    const describe = (r: Recordset) => `${r.type} recordset "${r.name}" in zone "${r.zone_name}"`;
    return pollUntil(`recordset ${id} to be ACTIVE`, probe, judge<Recordset>(describe), wait, ACTIVE_DEFAULTS);
  }

  async waitForRecordsetDeleted(zoneId: string, id: string, wait: WaitOptions = {}): Promise<void> {
    const probe = () => this.http.getIfExists<Recordset>(`/zones/${zoneId}/recordsets/${id}`, { resource: `recordset ${id} in zone ${zoneId}` });
    await pollUntil(`recordset ${id} to be deleted`, probe, gone(`recordset ${id} in zone ${zoneId}`), wait, ACTIVE_DEFAULTS);
  }
}
