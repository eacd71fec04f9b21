/**
 * Where the development OpenStack lives on this machine and where each service answers. Every
 * service is bound to one address (loopback by default), on its usual port but for MariaDB and
 * RabbitMQ, which take others so that a database or broker of the machine's own is left alone.
 */
import path from 'node:path';

export const DEV_CLOUD_DIR = '/var/lib/migravi/openstack';
export const REGION = 'RegionOne';

export interface DevCloudLayout {
  dir: string;
  bind: string;
  ports: typeof PORTS;
  etc: string;
  logs: string;
  pids: string;
  data: string;
  mysqlSocket: string;
  /** Secrets (database and service passwords, the admin's): root-only. */
  secretsFile: string;
  /** What `up` started and how to reach it (read by `status` and `down`). */
  stateFile: string;
  /** Credentials of the two projects that are the two clouds, for users and tests (root-only). */
  cloudsFile: string;
}

export const PORTS = {
  mysql: 13306,
  rabbit: 5673,
  rabbitDist: 25673,
  epmd: 4370,
  keystone: 5000,
  glance: 9292,
  neutron: 9696,
  nova: 8774,
  placement: 8778,
  designate: 9001,
  designateMdns: 5354,
} as const;

export function devCloudLayout(dir = DEV_CLOUD_DIR, bind = '127.0.0.1'): DevCloudLayout {
  return {
    dir,
    bind,
    ports: PORTS,
    etc: path.join(dir, 'etc'),
    logs: path.join(dir, 'logs'),
    pids: path.join(dir, 'pids'),
    data: path.join(dir, 'data'),
    mysqlSocket: path.join(dir, 'data', 'mysql.sock'),
    secretsFile: path.join(dir, 'secrets.json'),
    stateFile: path.join(dir, 'state.json'),
    cloudsFile: path.join(dir, 'clouds.json'),
  };
}

/** The services each get a database, a database user and (but Keystone) a Keystone user in the "service" project. */
export const SERVICES = ['keystone', 'glance', 'placement', 'neutron', 'nova', 'designate'] as const;
export type ServiceName = (typeof SERVICES)[number];

/** Nova keeps three databases: its API's, cell 0 (servers that never got a host), cell 1. */
export const DATABASES: Record<string, ServiceName> = {
  keystone: 'keystone', glance: 'glance', placement: 'placement', neutron: 'neutron',
  nova_api: 'nova', nova: 'nova', nova_cell0: 'nova', designate: 'designate',
};

/** The two projects that are the development OpenStack's two clouds, each with its own user. */
export const DEV_PROJECTS = ['cloud-a', 'cloud-b'] as const;

/**
 * The external network floating IPs come from. It is a testbed's WAN when that WAN is
 * 203.0.113.1/25 (the clouds at .11 and up, a two-cloud testbed's own floating IPs at .32–.63,
 * the outside world at .100): the pool, .64–.95, is clear of all of them, so embedded clouds and
 * projects can share one WAN.
 */
export const EXTERNAL_NETWORK = { name: 'public', cidr: '203.0.113.0/25', gateway: '203.0.113.1', poolStart: '203.0.113.64', poolEnd: '203.0.113.95', floatingRange: '203.0.113.64/27' };

/** The DNS zone each project is given, served by designate-mdns. */
export const dnsZoneOf = (project: string) => `${project}.example.`;

/** Nova's host: the one compute service, with the fake virt driver (MigraVI's runtime runs the containers). */
export const COMPUTE_HOST = 'migravi-host-1';
