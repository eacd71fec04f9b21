/**
 * The development OpenStack's configuration: one file per service, written from scratch into the
 * dev cloud's own directory (the packages' files under /etc stay untouched, but for the API paste
 * pipelines they ship, which are read from there). Only what differs from the defaults is set.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { COMPUTE_HOST, REGION, type DevCloudLayout, type ServiceName } from './layout';

export interface DevCloudSecrets {
  /** Database password of each service's user. */
  db: Record<ServiceName, string>;
  /** Keystone password of each service's user in the "service" project. */
  service: Record<Exclude<ServiceName, 'keystone'>, string>;
  admin: string;
  /** Password of each project's own user (the clouds' operators). */
  projects: Record<string, string>;
}

type Ini = Record<string, Record<string, string | number | boolean>>;

function render(ini: Ini): string {
  return Object.entries(ini)
    .map(([section, values]) => [`[${section}]`, ...Object.entries(values).map(([k, v]) => `${k} = ${String(v)}`)].join('\n'))
    .join('\n\n') + '\n';
}

export function dbUrl(l: DevCloudLayout, user: ServiceName, password: string, database: string): string {
  return `mysql+pymysql://${user}:${password}@${l.bind}:${l.ports.mysql}/${database}?charset=utf8`;
}

export function keystoneUrl(l: DevCloudLayout): string {
  return `http://${l.bind}:${l.ports.keystone}/v3`;
}

/** Each service checks tokens with Keystone as its own user. */
function authtoken(l: DevCloudLayout, user: string, password: string): Record<string, string> {
  return {
    www_authenticate_uri: `http://${l.bind}:${l.ports.keystone}`,
    auth_url: `http://${l.bind}:${l.ports.keystone}`,
    auth_type: 'password',
    project_domain_name: 'Default',
    user_domain_name: 'Default',
    project_name: 'service',
    username: user,
    password,
    region_name: REGION,
    // No memcached here: tokens are cached in each process.
    memcache_use_advanced_pool: "false",
  };
}

function transportUrl(l: DevCloudLayout): string {
  // RabbitMQ's guest user may connect from loopback only, which is where everything runs.
  return `rabbit://guest:guest@${l.bind}:${l.ports.rabbit}/`;
}

export function configFiles(l: DevCloudLayout, s: DevCloudSecrets): Record<string, string> {
  const state = (service: string) => path.join(l.data, service);
  const common = (service: string) => ({ debug: false, use_stderr: true, state_path: state(service) });
  const lock = (service: string) => ({ lock_path: path.join(state(service), 'lock') });
  const nova: Ini = {
    DEFAULT: {
      ...common('nova'), transport_url: transportUrl(l), compute_driver: 'fake.FakeDriver', host: COMPUTE_HOST, my_ip: l.bind,
      osapi_compute_listen: l.bind, osapi_compute_listen_port: l.ports.nova, osapi_compute_workers: 1, enabled_apis: 'osapi_compute',
      instances_path: path.join(state('nova'), 'instances'),
    },
    wsgi: { api_paste_config: '/etc/nova/api-paste.ini' },
    api: { auth_strategy: 'keystone' },
    api_database: { connection: dbUrl(l, 'nova', s.db.nova, 'nova_api') },
    database: { connection: dbUrl(l, 'nova', s.db.nova, 'nova') },
    conductor: { workers: 1 },
    // The one compute host is found within seconds of registering, without a manual discover_hosts.
    scheduler: { workers: 1, discover_hosts_in_cells_interval: 2 },
    keystone_authtoken: authtoken(l, 'nova', s.service.nova),
    placement: serviceAuth(l, 'nova', s.service.nova),
    neutron: serviceAuth(l, 'nova', s.service.nova),
    glance: { region_name: REGION },
    vnc: { enabled: false },
    oslo_concurrency: lock('nova'),
  };
  return {
    'keystone.conf': render({
      DEFAULT: { debug: false, use_stderr: true },
      database: { connection: dbUrl(l, 'keystone', s.db.keystone, 'keystone') },
      token: { provider: 'fernet', expiration: 3600 },
      fernet_tokens: { key_repository: path.join(state('keystone'), 'fernet-keys') },
      fernet_receipts: { key_repository: path.join(state('keystone'), 'fernet-keys') },
      credential: { key_repository: path.join(state('keystone'), 'credential-keys') },
    }),
    'placement/placement.conf': render({
      DEFAULT: { debug: false, use_stderr: true },
      placement_database: { connection: dbUrl(l, 'placement', s.db.placement, 'placement') },
      api: { auth_strategy: 'keystone' },
      keystone_authtoken: authtoken(l, 'placement', s.service.placement),
    }),
    'glance-api.conf': render({
      DEFAULT: { ...common('glance'), bind_host: l.bind, bind_port: l.ports.glance, workers: 1, enabled_backends: 'fs:file' },
      database: { connection: dbUrl(l, 'glance', s.db.glance, 'glance') },
      keystone_authtoken: authtoken(l, 'glance', s.service.glance),
      paste_deploy: { flavor: 'keystone', config_file: '/etc/glance/glance-api-paste.ini' },
      glance_store: { default_backend: 'fs' },
      fs: { filesystem_store_datadir: path.join(state('glance'), 'images') },
      os_glance_tasks_store: { filesystem_store_datadir: path.join(state('glance'), 'tasks') },
      os_glance_staging_store: { filesystem_store_datadir: path.join(state('glance'), 'staging') },
      oslo_concurrency: lock('glance'),
    }),
    'neutron.conf': render({
      DEFAULT: {
        ...common('neutron'), bind_host: l.bind, bind_port: l.ports.neutron, core_plugin: 'ml2', service_plugins: 'router',
        // Two projects hold copies of one VI network: the same CIDR twice.
        allow_overlapping_ips: true, auth_strategy: 'keystone', transport_url: transportUrl(l), api_workers: 1, rpc_workers: 1,
        api_paste_config: '/etc/neutron/api-paste.ini',
        notify_nova_on_port_status_changes: false, notify_nova_on_port_data_changes: false,
      },
      database: { connection: dbUrl(l, 'neutron', s.db.neutron, 'neutron') },
      keystone_authtoken: authtoken(l, 'neutron', s.service.neutron),
      oslo_concurrency: lock('neutron'),
    }),
    'ml2_conf.ini': render({
      ml2: { type_drivers: 'flat,vxlan', tenant_network_types: 'vxlan', mechanism_drivers: 'migravi', extension_drivers: 'port_security' },
      ml2_type_flat: { flat_networks: 'public' },
      ml2_type_vxlan: { vni_ranges: '1000:1999' },
    }),
    'nova.conf': render(nova),
    // The compute service reaches the databases through the conductor only (it logs an error for each direct access).
    'nova-compute.conf': render(Object.fromEntries(Object.entries(nova).filter(([section]) => !section.endsWith('database')))),
    'designate.conf': render({
      DEFAULT: { ...common('designate'), transport_url: transportUrl(l) },
      'storage:sqlalchemy': { connection: dbUrl(l, 'designate', s.db.designate, 'designate') },
      'service:api': { listen: `${l.bind}:${l.ports.designate}`, auth_strategy: 'keystone', enable_api_v2: true, enable_api_admin: true, workers: 1, api_base_uri: `http://${l.bind}:${l.ports.designate}/` },
      'service:central': { workers: 1 },
      'service:worker': { workers: 1, poll_delay: 1, poll_retry_interval: 1 },
      'service:producer': { workers: 1 },
      'service:mdns': { listen: `${l.bind}:${l.ports.designateMdns}`, workers: 1 },
      keystone_authtoken: authtoken(l, 'designate', s.service.designate),
      oslo_concurrency: lock('designate'),
    }),
    // The fake backend sends nothing anywhere; designate-mdns answers for the zones itself, and
    // the worker checks their serials there.
    'pools.yaml': [
      '- name: default',
      '  description: the development OpenStack\'s pool (designate-mdns answers)',
      '  attributes: {}',
      '  ns_records:',
      '    - hostname: ns1.migravi.test.',
      '      priority: 1',
      '  nameservers:',
      `    - host: ${l.bind}`,
      `      port: ${l.ports.designateMdns}`,
      '  targets:',
      '    - type: fake',
      '      description: no nameserver of its own',
      '      masters:',
      `        - host: ${l.bind}`,
      `          port: ${l.ports.designateMdns}`,
      '      options:',
      `        host: ${l.bind}`,
      `        port: ${l.ports.designateMdns}`,
      '',
    ].join('\n'),
  };
}

function serviceAuth(l: DevCloudLayout, user: string, password: string): Record<string, string> {
  return {
    auth_type: 'password', auth_url: `http://${l.bind}:${l.ports.keystone}`, project_domain_name: 'Default', user_domain_name: 'Default',
    project_name: 'service', username: user, password, region_name: REGION, valid_interfaces: 'public',
  };
}

/** Writes every file (root-only: they hold passwords) and each service's state directory. */
export function writeConfigFiles(l: DevCloudLayout, s: DevCloudSecrets): void {
  for (const [name, text] of Object.entries(configFiles(l, s))) {
    const file = path.join(l.etc, name);
    mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    writeFileSync(file, text, { mode: 0o600 });
  }
  for (const service of ['keystone', 'glance', 'neutron', 'nova', 'designate']) {
    mkdirSync(path.join(l.data, service, 'lock'), { recursive: true, mode: 0o700 });
  }
}
