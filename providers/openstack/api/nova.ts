/**
 * Nova v2.1 at a fixed microversion: servers (created on ports this project made in Neutron),
 * waits on their status, and flavors.
 */
import type { EndpointOptions } from './catalog';
import type { DeleteOptions, OpenStackHttp } from './http';
import type { KeystoneSession } from './keystone';
import { pollUntil } from './poll';
import type { Verdict, WaitOptions } from './poll';

/** 2.47: the flavor embedded in a server; 2.37: `networks` is required ('none' | 'auto' | a list). Zed goes to 2.93. */
export const NOVA_MICROVERSION = '2.79';

export type ServerStatus =
  | 'ACTIVE'
  | 'BUILD'
  | 'ERROR'
  | 'DELETED'
  | 'SOFT_DELETED'
  | 'SHUTOFF'
  | 'PAUSED'
  | 'SUSPENDED'
  | 'REBOOT'
  | 'HARD_REBOOT'
  | 'REBUILD'
  | 'RESIZE'
  | 'VERIFY_RESIZE'
  | 'REVERT_RESIZE'
  | 'MIGRATING'
  | 'RESCUE'
  | 'SHELVED'
  | 'SHELVED_OFFLOADED'
  | 'PASSWORD'
  | 'UNKNOWN';

export interface ServerAddress {
  addr: string;
  version: 4 | 6;
  'OS-EXT-IPS:type'?: 'fixed' | 'floating';
  'OS-EXT-IPS-MAC:mac_addr'?: string;
}

export interface Server {
  id: string;
  name: string;
  status: ServerStatus;
  tenant_id: string;
  'OS-EXT-STS:task_state'?: string | null;
  /** Present once the server has failed (status ERROR), with Nova's reason. */
  fault?: { code: number; message: string; details?: string; created: string };
  /** By network name. */
  addresses: Record<string, ServerAddress[]>;
  metadata: Record<string, string>;
  flavor: { original_name: string; vcpus: number; ram: number; disk: number };
  /** '' when booted from a volume. */
  image: { id: string } | '';
  /** Admins only, by default policy. */
  'OS-EXT-SRV-ATTR:host'?: string | null;
  created: string;
  updated: string;
}

export interface ServerSpec {
  name: string;
  imageRef: string;
  flavorRef: string;
  /** Ports made in Neutron beforehand (their security groups apply), or networks; 'none': no interface. */
  networks: Array<{ port: string } | { uuid: string; fixed_ip?: string }> | 'none' | 'auto';
  metadata?: Record<string, string>;
  key_name?: string;
  /** Base64, at most 64 KiB. */
  user_data?: string;
  availability_zone?: string;
  config_drive?: boolean;
}

export interface Flavor {
  id: string;
  name: string;
  vcpus: number;
  /** MiB. */
  ram: number;
  /** GiB. */
  disk: number;
  'OS-FLV-EXT-DATA:ephemeral': number;
  'os-flavor-access:is_public': boolean;
}

const describe = (s: Server) => `server "${s.name}" (${s.id})`;
// Nova reads the name filter as a regular expression (re.search): anchored and escaped, then compared exactly.
const nameFilter = (name: string) => `^${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`;

export class NovaClient {
  private readonly http: OpenStackHttp;

  constructor(session: KeystoneSession, endpoint: EndpointOptions = {}) {
    this.http = session.client('nova', 'compute', endpoint, { 'OpenStack-API-Version': `compute ${NOVA_MICROVERSION}` });
  }

  /** Nova answers before the server is built: see waitForServer. Not retried (a retry may boot a second server). */
  async createServer(spec: ServerSpec): Promise<{ id: string }> {
    const created = await this.http.post<{ server: { id: string } }>('/servers', { server: spec }, { resource: `server "${spec.name}"` });
    return { id: created.server.id };
  }

  async getServer(id: string): Promise<Server> {
    return (await this.http.get<{ server: Server }>(`/servers/${id}`, { resource: `server ${id}` })).server;
  }

  /** Servers of the project; with a name, those of exactly that name. */
  async listServers(filter: { name?: string } = {}): Promise<Server[]> {
    const query = filter.name !== undefined ? { name: nameFilter(filter.name) } : {};
    const servers = await this.http.listAll<Server>('/servers/detail', 'servers', { query });
    return filter.name !== undefined ? servers.filter((s) => s.name === filter.name) : servers;
  }

  /** Nova deletes in the background: see waitForServerDeleted. */
  deleteServer(id: string, opts: DeleteOptions = {}): Promise<boolean> {
    return this.http.delete(`/servers/${id}`, { ...opts, resource: `server ${id}` });
  }

  /** Polls until the server has the status; ERROR ends the wait with Nova's fault message. */
  waitForServer(id: string, status: ServerStatus = 'ACTIVE', wait: WaitOptions = {}): Promise<Server> {
    const judge = (s: Server): Verdict => {
      if (s.status === status) return { state: 'done' };
      if (s.status === 'ERROR') return { state: 'failed', reason: `${describe(s)} is ERROR: ${s.fault?.message ?? 'Nova recorded no fault'}` };
      return { state: 'pending', seen: `${describe(s)} ${s.status}${s['OS-EXT-STS:task_state'] ? ` (task ${s['OS-EXT-STS:task_state']})` : ''}` };
    };
    return pollUntil(`server ${id} to be ${status}`, () => this.getServer(id), judge, wait, { timeoutMs: 300_000, intervalMs: 2_000 });
  }

  /** Polls until Nova no longer knows the server. A failed delete leaves it ERROR with no task: that ends the wait. */
  async waitForServerDeleted(id: string, wait: WaitOptions = {}): Promise<void> {
    const judge = (s: Server | undefined): Verdict => {
      if (!s || s.status === 'DELETED') return { state: 'done' };
      // An ERROR server being deleted stays ERROR, with task "deleting", until it is gone.
      if (s.status === 'ERROR' && !s['OS-EXT-STS:task_state']) return { state: 'failed', reason: `${describe(s)} was not deleted: ${s.fault?.message ?? 'Nova recorded no fault'}` };
      return { state: 'pending', seen: `${describe(s)} ${s.status}${s['OS-EXT-STS:task_state'] ? ` (task ${s['OS-EXT-STS:task_state']})` : ''}` };
    };
    const probe = async () => (await this.http.getIfExists<{ server: Server }>(`/servers/${id}`, { resource: `server ${id}` }))?.server;
    await pollUntil(`server ${id} to be deleted`, probe, judge, wait, { timeoutMs: 180_000, intervalMs: 1_000 });
  }

  /** The server's metadata (at most 255 characters a key and a value; Nova's quota caps the count). */
  async serverMetadata(id: string): Promise<Record<string, string>> {
    return (await this.http.get<{ metadata: Record<string, string> }>(`/servers/${id}/metadata`, { resource: `metadata of server ${id}` })).metadata;
  }

  /** Sets these keys, leaving the others. */
  async updateServerMetadata(id: string, metadata: Record<string, string>): Promise<void> {
    await this.http.post(`/servers/${id}/metadata`, { metadata }, { resource: `metadata of server ${id}`, idempotent: true });
  }

  deleteServerMetadata(id: string, key: string): Promise<boolean> {
    return this.http.delete(`/servers/${id}/metadata/${encodeURIComponent(key)}`, { ifExists: true, resource: `metadata key "${key}" of server ${id}` });
  }

  listFlavors(): Promise<Flavor[]> {
    return this.http.listAll<Flavor>('/flavors/detail', 'flavors');
  }
}
