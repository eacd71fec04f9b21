/**
 * The development OpenStack's processes: how each starts, in which order, and how `up` knows it
 * answers. No systemd here (PLATFORM.md): each runs in its own session, logging to its own file,
 * its PID recorded, and is stopped by that PID's process group (uwsgi, Neutron and Nova fork
 * workers of their own).
 */
import path from 'node:path';
import type { DevCloudLayout } from './layout';

/** The interpreter the OpenStack packages were installed for (another python3 may come first on the PATH). */
export const DEBIAN_PYTHON = '/usr/bin/python3';

export type Readiness = { http: string } | { tcp: number } | 'started';

export interface Daemon {
  name: string;
  argv: string[];
  env?: Record<string, string>;
  ready: Readiness;
  /**
   * When it starts: 0 the database, 1 the broker (meanwhile the schemas are synced), 2 Keystone
   * (bootstrapped, then given the service users), 3 the services, 4 Designate's worker.
   */
  tier: number;
}

/** uwsgi serving one WSGI application on HTTP (Keystone, Placement). */
function uwsgi(l: DevCloudLayout, name: string, port: number, wsgiFile: string, env: Record<string, string>): string[] {
  return [
    'uwsgi', '--plugins', 'python3', '--http-socket', `${l.bind}:${port}`, '--wsgi-file', wsgiFile,
    '--master', '--processes', '2', '--threads', '4', '--lazy-apps', '--die-on-term', '--enable-threads',
    '--buffer-size', '65535', '--procname-prefix', `migravi-${name}-`,
    // uwsgi's HTTP socket drops reused keep-alive connections (PLATFORM.md).
    '--add-header', 'Connection: close',
    ...Object.entries(env).flatMap(([k, v]) => ['--env', `${k}=${v}`]),
  ];
}

export function daemons(l: DevCloudLayout): Daemon[] {
  const etc = (file: string) => path.join(l.etc, file);
  const conf = (...files: string[]) => files.flatMap((f) => ['--config-file', etc(f)]);
  const base = (service: string) => `http://${l.bind}:${l.ports[service as keyof typeof l.ports]}`;
  return [
    {
      name: 'mariadb', tier: 0, ready: { tcp: l.ports.mysql },
      argv: ['mariadbd', '--no-defaults', '--user=root', `--datadir=${path.join(l.data, 'mysql')}`, `--socket=${l.mysqlSocket}`,
        `--port=${l.ports.mysql}`, `--bind-address=${l.bind}`, '--max-connections=2000', '--innodb-buffer-pool-size=128M',
        '--skip-log-bin', '--character-set-server=utf8mb4', '--collation-server=utf8mb4_general_ci'],
    },
    // RabbitMQ's Erlang runtime finds its peers through epmd: one of our own, on its own port, so
    // that stopping the broker stops it too.
    { name: 'epmd', tier: 0, ready: { tcp: l.ports.epmd }, argv: ['epmd', '-port', String(l.ports.epmd), '-address', l.bind] },
    {
      name: 'rabbitmq', tier: 1, ready: { tcp: l.ports.rabbit },
      argv: ['/usr/lib/rabbitmq/bin/rabbitmq-server'],
      env: {
        HOME: path.join(l.data, 'rabbitmq'),
        RABBITMQ_NODENAME: 'migravi@localhost', RABBITMQ_NODE_IP_ADDRESS: l.bind, RABBITMQ_NODE_PORT: String(l.ports.rabbit),
        RABBITMQ_DIST_PORT: String(l.ports.rabbitDist), ERL_EPMD_PORT: String(l.ports.epmd),
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS: `-kernel inet_dist_use_interface {${l.bind.split('.').join(',')}}`,
        RABBITMQ_MNESIA_BASE: path.join(l.data, 'rabbitmq', 'mnesia'), RABBITMQ_LOG_BASE: path.join(l.data, 'rabbitmq', 'log'),
        RABBITMQ_ENABLED_PLUGINS_FILE: path.join(l.data, 'rabbitmq', 'enabled_plugins'),
        RABBITMQ_PID_FILE: path.join(l.data, 'rabbitmq', 'pid'),
      },
    },
    { name: 'keystone', tier: 2, ready: { http: `${base('keystone')}/v3` }, argv: uwsgi(l, 'keystone', l.ports.keystone, '/usr/bin/keystone-wsgi-public', { OS_KEYSTONE_CONFIG_FILES: etc('keystone.conf') }) },
    { name: 'placement', tier: 3, ready: { http: `${base('placement')}/` }, argv: uwsgi(l, 'placement', l.ports.placement, '/usr/bin/placement-api', { OS_PLACEMENT_CONFIG_DIR: etc('placement') }) },
    { name: 'glance-api', tier: 3, ready: { http: `${base('glance')}/versions` }, argv: ['glance-api', ...conf('glance-api.conf')] },
    {
      name: 'neutron-server', tier: 3, ready: { http: `${base('neutron')}/` },
      argv: ['neutron-server', ...conf('neutron.conf', 'ml2_conf.ini')],
      // The project's ML2 driver that binds every port (deploy/openstack/ml2), found by its entry point.
      env: { PYTHONPATH: ml2DriverDir() },
    },
    { name: 'nova-api', tier: 3, ready: { http: `${base('nova')}/` }, argv: ['nova-api', ...conf('nova.conf')] },
    { name: 'nova-conductor', tier: 3, ready: 'started', argv: ['nova-conductor', ...conf('nova.conf')] },
    { name: 'nova-scheduler', tier: 3, ready: 'started', argv: ['nova-scheduler', ...conf('nova.conf')] },
    // The nova-compute package pulls in qemu and libvirt; the fake driver needs neither, and the
    // service's module ships with python3-nova.
    { name: 'nova-compute', tier: 3, ready: 'started', argv: [DEBIAN_PYTHON, '-c', 'import sys; from nova.cmd.compute import main; sys.argv[0] = "nova-compute"; sys.exit(main())', ...conf('nova-compute.conf')] },
    { name: 'designate-central', tier: 3, ready: 'started', argv: ['designate-central', ...conf('designate.conf')] },
    { name: 'designate-api', tier: 3, ready: { http: `${base('designate')}/` }, argv: ['designate-api', ...conf('designate.conf')] },
    { name: 'designate-mdns', tier: 3, ready: { tcp: l.ports.designateMdns }, argv: ['designate-mdns', ...conf('designate.conf')] },
    { name: 'designate-producer', tier: 3, ready: 'started', argv: ['designate-producer', ...conf('designate.conf')] },
    // Started last: it must find its pool, which `designate-manage pool update` writes through central.
    { name: 'designate-worker', tier: 4, ready: 'started', argv: ['designate-worker', ...conf('designate.conf')] },
  ];
}

export function ml2DriverDir(): string {
  // dist/providers/openstack/dev-cloud → the repository's deploy/openstack/ml2
  return path.resolve(__dirname, '..', '..', '..', '..', 'deploy', 'openstack', 'ml2');
}
