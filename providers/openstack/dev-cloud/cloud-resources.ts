/**
 * What the development OpenStack holds before anyone uses it, created through its own APIs as
 * its admin (idempotent: found by name, else created): the service users and the catalog, the two
 * projects that are the two clouds with a user each, and — once every service runs — a flavor and
 * an image for the servers that stand for hosts, the external network floating IPs come from.
 */
import { COMPUTE_HOST, DEV_PROJECTS, EXTERNAL_NETWORK, REGION, type DevCloudLayout } from './layout';
import type { DevCloudSecrets } from './config-files';
import { waitFor } from '../../../lib/processes';

export interface DevCloudUser {
  username: string;
  password: string;
  userDomainName: string;
  projectName: string;
  projectDomainName: string;
  projectId: string;
}

/** clouds.json: how to reach the development OpenStack, as each cloud's user and as its admin. */
export interface DevCloudCredentials {
  authUrl: string;
  region: string;
  admin: DevCloudUser;
  clouds: Record<string, DevCloudUser>;
  externalNetwork: string;
  /** The external network's allocation pool as one CIDR (its floating IPs). */
  floatingRange: string;
  flavor: string;
  image: string;
  computeHost: string;
}

type Json = Record<string, unknown>;

/** A small admin client for the bootstrap only (the provider's own client is providers/openstack/api). */
class Admin {
  private token = '';
  constructor(private readonly l: DevCloudLayout, private readonly password: string) {}

  get keystone(): string {
    return `http://${this.l.bind}:${this.l.ports.keystone}/v3`;
  }

  async login(): Promise<void> {
    const response = await fetch(`${this.keystone}/auth/tokens`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Connection: 'close' },
      body: JSON.stringify({ auth: { identity: { methods: ['password'], password: { user: { name: 'admin', domain: { name: 'Default' }, password: this.password } } }, scope: { project: { name: 'admin', domain: { name: 'Default' } } } } }),
    });
    await response.arrayBuffer();
    if (response.status !== 201) throw new Error(`the development OpenStack's admin cannot log in to ${this.keystone} (HTTP ${response.status})`);
    this.token = response.headers.get('x-subject-token')!;
  }

  async call(method: string, url: string, body?: unknown, headers: Record<string, string> = {}): Promise<Json> {
    const raw = body instanceof Uint8Array;
    const response = await fetch(url, {
      method,
      headers: { 'X-Auth-Token': this.token, Connection: 'close', ...(body !== undefined ? { 'Content-Type': raw ? 'application/octet-stream' : 'application/json' } : {}), ...headers },
      body: body === undefined ? undefined : raw ? body : JSON.stringify(body),
      signal: AbortSignal.timeout(60_000),
    });
    const text = await response.text();
    if (response.status >= 400) throw new Error(`development OpenStack set-up: ${method} ${url}: HTTP ${response.status}: ${text.slice(0, 300)}`);
    return text ? (JSON.parse(text) as Json) : {};
  }

  /** The one object of `collection` named `name` (a list filtered by name), or what `create` makes. */
  async ensure(url: string, collection: string, name: string, create: () => Promise<Json>, filter = `name=${encodeURIComponent(name)}`): Promise<Json> {
    const found = (await this.call('GET', `${url}?${filter}`))[collection] as Json[];
    const existing = found.find((o) => o['name'] === name);
    return existing ?? create();
  }
}

const SERVICE_CATALOG = (l: DevCloudLayout) => [
  { type: 'image', name: 'glance', url: `http://${l.bind}:${l.ports.glance}` },
  { type: 'placement', name: 'placement', url: `http://${l.bind}:${l.ports.placement}` },
  { type: 'network', name: 'neutron', url: `http://${l.bind}:${l.ports.neutron}` },
  { type: 'compute', name: 'nova', url: `http://${l.bind}:${l.ports.nova}/v2.1` },
  { type: 'dns', name: 'designate', url: `http://${l.bind}:${l.ports.designate}` },
];

async function roleId(admin: Admin, name: string): Promise<string> {
  const roles = (await admin.call('GET', `${admin.keystone}/roles?name=${name}`))['roles'] as Json[];
  if (!roles[0]) throw new Error(`Keystone has no "${name}" role (keystone-manage bootstrap makes it)`);
  return roles[0]['id'] as string;
}

async function ensureProject(admin: Admin, name: string): Promise<string> {
  const project = await admin.ensure(`${admin.keystone}/projects`, 'projects', name, async () =>
    (await admin.call('POST', `${admin.keystone}/projects`, { project: { name, domain_id: 'default', description: 'MigraVI development OpenStack' } }))['project'] as Json);
  return project['id'] as string;
}

/** A user with this password (set again each time: the secrets file is the truth) and a role on the project. */
async function ensureUser(admin: Admin, name: string, password: string, projectId: string, role: string): Promise<void> {
  const user = await admin.ensure(`${admin.keystone}/users`, 'users', name, async () =>
    (await admin.call('POST', `${admin.keystone}/users`, { user: { name, domain_id: 'default', password } }))['user'] as Json);
  await admin.call('PATCH', `${admin.keystone}/users/${String(user['id'])}`, { user: { password } });
  await admin.call('PUT', `${admin.keystone}/projects/${projectId}/users/${String(user['id'])}/roles/${role}`);
}

/** Service users, the catalog and the two clouds' projects and users: before the services start (Nova's refuse to run without their user). */
export async function setUpIdentity(l: DevCloudLayout, s: DevCloudSecrets): Promise<void> {
  const admin = new Admin(l, s.admin);
  await admin.login();
  const adminRole = await roleId(admin, 'admin');
  const memberRole = await roleId(admin, 'member');
  const serviceProject = await ensureProject(admin, 'service');
  for (const [user, password] of Object.entries(s.service)) await ensureUser(admin, user, password, serviceProject, adminRole);
  for (const entry of SERVICE_CATALOG(l)) {
    const service = await admin.ensure(`${admin.keystone}/services`, 'services', entry.name, async () =>
      (await admin.call('POST', `${admin.keystone}/services`, { service: { type: entry.type, name: entry.name } }))['service'] as Json, `type=${entry.type}`);
    const endpoints = (await admin.call('GET', `${admin.keystone}/endpoints?service_id=${String(service['id'])}`))['endpoints'] as Json[];
    for (const iface of ['public', 'internal', 'admin']) {
      const existing = endpoints.find((e) => e['interface'] === iface && e['region_id'] === REGION);
      if (existing && existing['url'] === entry.url) continue;
      if (existing) await admin.call('DELETE', `${admin.keystone}/endpoints/${String(existing['id'])}`);
      await admin.call('POST', `${admin.keystone}/endpoints`, { endpoint: { service_id: service['id'], interface: iface, region_id: REGION, url: entry.url } });
    }
  }
  for (const project of DEV_PROJECTS) {
    const projectId = await ensureProject(admin, project);
    await ensureUser(admin, `${project}-operator`, s.projects[project]!, projectId, memberRole);
  }
}

/** Once every service runs: the host flavor and image, the external network, the compute host found by the scheduler. */
/** `computeStartedAt`: when the compute service was started (ms since the epoch), for its first heartbeat. */
export async function setUpCloudResources(l: DevCloudLayout, s: DevCloudSecrets, log: (line: string) => void, opts: { computeStartedAt: number }): Promise<DevCloudCredentials> {
  const admin = new Admin(l, s.admin);
  await admin.login();
  const nova = `http://${l.bind}:${l.ports.nova}/v2.1`;
  const neutron = `http://${l.bind}:${l.ports.neutron}/v2.0`;
  const glance = `http://${l.bind}:${l.ports.glance}/v2`;
  const flavor = 'migravi.host';
  await admin.ensure(`${nova}/flavors/detail`, 'flavors', flavor, async () =>
    (await admin.call('POST', `${nova}/flavors`, { flavor: { name: flavor, ram: 512, vcpus: 1, disk: 1 } }))['flavor'] as Json, 'is_public=None');
  const imageName = 'migravi-host';
  const image = await admin.ensure(`${glance}/images`, 'images', imageName, async () =>
    admin.call('POST', `${glance}/images`, { name: imageName, disk_format: 'raw', container_format: 'bare', visibility: 'public' }));
  if (image['status'] !== 'active') {
    // The fake virt driver never reads it: a few bytes make the image active.
    await admin.call('PUT', `${glance}/images/${String(image['id'])}/file`, new TextEncoder().encode('MigraVI host image: the fake virt driver boots nothing\n'));
  }
  const external = await admin.ensure(`${neutron}/networks`, 'networks', EXTERNAL_NETWORK.name, async () =>
    (await admin.call('POST', `${neutron}/networks`, { network: { name: EXTERNAL_NETWORK.name, 'router:external': true, 'provider:network_type': 'flat', 'provider:physical_network': 'public' } }))['network'] as Json);
  const subnets = (await admin.call('GET', `${neutron}/subnets?network_id=${String(external['id'])}`))['subnets'] as Json[];
  const pools = [{ start: EXTERNAL_NETWORK.poolStart, end: EXTERNAL_NETWORK.poolEnd }];
  if (!subnets.length) {
    await admin.call('POST', `${neutron}/subnets`, { subnet: { network_id: external['id'], name: `${EXTERNAL_NETWORK.name}-v4`, ip_version: 4, cidr: EXTERNAL_NETWORK.cidr, gateway_ip: EXTERNAL_NETWORK.gateway, enable_dhcp: false, allocation_pools: pools } });
  } else if (JSON.stringify(subnets[0]!['allocation_pools']) !== JSON.stringify(pools)) {
    // A database from an older release: its pool moves (addresses in use outside it stay valid).
    await admin.call('PUT', `${neutron}/subnets/${String(subnets[0]!['id'])}`, { subnet: { allocation_pools: pools } });
  }
  const t = Date.now();
  await waitFor(`Nova's scheduler to find the compute host ${COMPUTE_HOST} (log: ${l.logs}/nova-compute.log)`, async () => {
    const hypervisors = (await admin.call('GET', `${nova}/os-hypervisors`))['hypervisors'] as Json[];
    if (!hypervisors.some((h) => h['hypervisor_hostname'] === COMPUTE_HOST && h['state'] === 'up')) return false;
    // "up" may be the last heartbeat of a compute service stopped less than a minute ago, which
    // turns "down" before the new one reports: the scheduler would then find no host. Wait for a
    // heartbeat of the service started now (Nova's times are UTC without a zone).
    const services = (await admin.call('GET', `${nova}/os-services?binary=nova-compute&host=${COMPUTE_HOST}`))['services'] as Json[];
    return services.some((v) => v['state'] === 'up' && Date.parse(`${String(v['updated_at'])}Z`) >= opts.computeStartedAt);
  }, 120_000, 500);
  log(`compute host ${COMPUTE_HOST} found by the scheduler (${Date.now() - t} ms)`);
  const user = (name: string, password: string, projectName: string, projectId: string): DevCloudUser => ({ username: name, password, userDomainName: 'Default', projectName, projectDomainName: 'Default', projectId });
  const projects = (await admin.call('GET', `${admin.keystone}/projects`))['projects'] as Json[];
  const idOf = (name: string) => String(projects.find((p) => p['name'] === name)!['id']);
  return {
    authUrl: admin.keystone,
    region: REGION,
    admin: user('admin', s.admin, 'admin', idOf('admin')),
    clouds: Object.fromEntries(DEV_PROJECTS.map((p) => [p, user(`${p}-operator`, s.projects[p]!, p, idOf(p))])),
    externalNetwork: EXTERNAL_NETWORK.name,
    floatingRange: EXTERNAL_NETWORK.floatingRange,
    flavor,
    image: imageName,
    computeHost: COMPUTE_HOST,
  };
}
