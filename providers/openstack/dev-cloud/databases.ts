/**
 * The development OpenStack's databases: MariaDB's data directory, one database and user per
 * service, and each service's schema. A schema is synced once per installed package version
 * (a stamp file records it), so a second `up` skips the syncs, which take most of a first one.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { run } from '../../../lib/exec';
import { dbUrl, type DevCloudSecrets } from './config-files';
import { DATABASES, REGION, type DevCloudLayout, type ServiceName } from './layout';

export async function ensureMysqlDataDir(l: DevCloudLayout): Promise<void> {
  const dataDir = path.join(l.data, 'mysql');
  if (existsSync(path.join(dataDir, 'mysql'))) return;
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  await run('mariadb-install-db', ['--no-defaults', '--user=root', `--datadir=${dataDir}`, '--auth-root-authentication-method=socket', '--skip-test-db']);
}

function sqlString(value: string): string {
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

/** Creates what is missing and sets every service user's password to the one in the secrets file. */
export async function ensureDatabases(l: DevCloudLayout, s: DevCloudSecrets): Promise<void> {
  const statements: string[] = [];
  for (const [database, user] of Object.entries(DATABASES)) {
    statements.push(`CREATE DATABASE IF NOT EXISTS ${database};`);
    for (const host of [l.bind, 'localhost']) {
      statements.push(`CREATE USER IF NOT EXISTS ${sqlString(user)}@${sqlString(host)};`);
      statements.push(`ALTER USER ${sqlString(user)}@${sqlString(host)} IDENTIFIED BY ${sqlString(s.db[user])};`);
      statements.push(`GRANT ALL PRIVILEGES ON ${database}.* TO ${sqlString(user)}@${sqlString(host)};`);
    }
  }
  await run('mariadb', ['--no-defaults', '-S', l.mysqlSocket, '-uroot'], { input: statements.join('\n') + '\n' });
}

async function packageVersion(pkg: string): Promise<string> {
  return (await run('dpkg-query', ['-W', '-f=${Version}', pkg])).stdout.trim();
}

/** Runs `sync` unless the stamp says this package version's schema is in place already. */
async function syncOnce(l: DevCloudLayout, service: ServiceName, pkg: string, sync: () => Promise<void>): Promise<'synced' | 'current'> {
  const stamp = path.join(l.data, service, 'schema-synced');
  const version = await packageVersion(pkg);
  if (existsSync(stamp) && readFileSync(stamp, 'utf8') === version) return 'current';
  await sync();
  mkdirSync(path.dirname(stamp), { recursive: true });
  writeFileSync(stamp, version);
  return 'synced';
}

/** Every schema, in parallel (they are independent); returns which were synced now. */
export async function syncSchemas(l: DevCloudLayout, s: DevCloudSecrets): Promise<string[]> {
  const etc = (file: string) => path.join(l.etc, file);
  const manage = async (program: string, args: string[]) => {
    await run(program, args);
  };
  const nova = async () => {
    const novaConf = ['--config-file', etc('nova.conf')];
    await manage('nova-manage', [...novaConf, 'api_db', 'sync']);
    await manage('nova-manage', [...novaConf, 'cell_v2', 'map_cell0', '--database_connection', dbUrl(l, 'nova', s.db.nova, 'nova_cell0')]);
    const cells = (await run('nova-manage', [...novaConf, 'cell_v2', 'list_cells'])).stdout;
    if (!/\|\s*cell1\s*\|/.test(cells)) await manage('nova-manage', [...novaConf, 'cell_v2', 'create_cell', '--name', 'cell1']);
    await manage('nova-manage', [...novaConf, 'db', 'sync']);
  };
  const jobs: Array<[ServiceName, string, () => Promise<void>]> = [
    ['keystone', 'keystone', () => manage('keystone-manage', ['--config-file', etc('keystone.conf'), 'db_sync'])],
    ['glance', 'glance-api', () => manage('glance-manage', ['--config-file', etc('glance-api.conf'), 'db_sync'])],
    ['placement', 'placement-api', () => manage('placement-manage', ['--config-file', etc('placement/placement.conf'), 'db', 'sync'])],
    ['neutron', 'neutron-server', () => manage('neutron-db-manage', ['--config-file', etc('neutron.conf'), '--config-file', etc('ml2_conf.ini'), 'upgrade', 'heads'])],
    ['nova', 'nova-api', nova],
    ['designate', 'designate-central', () => manage('designate-manage', ['--config-file', etc('designate.conf'), 'database', 'sync'])],
  ];
  const results = await Promise.all(jobs.map(async ([service, pkg, sync]) => [service, await syncOnce(l, service, pkg, sync)] as const));
  return results.filter(([, r]) => r === 'synced').map(([service]) => service);
}

/**
 * Keystone's keys and its first objects (the admin, its project and role, the identity
 * endpoint); bootstrap is idempotent and keeps the admin's password current.
 */
export async function bootstrapKeystone(l: DevCloudLayout, s: DevCloudSecrets): Promise<void> {
  const conf = ['--config-file', path.join(l.etc, 'keystone.conf')];
  const keys = path.join(l.data, 'keystone');
  for (const [setup, dir] of [['fernet_setup', 'fernet-keys'], ['credential_setup', 'credential-keys']] as const) {
    if (!existsSync(path.join(keys, dir, '0'))) await run('keystone-manage', [...conf, setup, '--keystone-user', 'root', '--keystone-group', 'root']);
  }
  const url = `http://${l.bind}:${l.ports.keystone}/v3`;
  // The password goes by the environment: a failed command's message quotes its arguments.
  await run('keystone-manage', [...conf, 'bootstrap', '--bootstrap-admin-url', url, '--bootstrap-internal-url', url,
    '--bootstrap-public-url', url, '--bootstrap-region-id', REGION], { env: { ...process.env, OS_BOOTSTRAP_PASSWORD: s.admin } });
}

/** Writes the pool Designate's worker serves (central must be consuming its queue: it answers over RPC). */
export async function updateDesignatePool(l: DevCloudLayout): Promise<void> {
  await run('designate-manage', ['--config-file', path.join(l.etc, 'designate.conf'), 'pool', 'update', '--file', path.join(l.etc, 'pools.yaml')]);
}
