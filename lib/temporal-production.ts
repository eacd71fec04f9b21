/**
 * A production-style Temporal cluster on this machine: the server built from its Go module
 * (setup.sh), its history and visibility in PostgreSQL, and mutual TLS on every gRPC port — the
 * frontend (clients and workers), the internode ports (history, matching) and the server's own
 * system workers — with certificates from MigraVI's authority (lib/temporal-tls.ts). What has no
 * TLS in Temporal (the membership gossip) and PostgreSQL listen on the loopback only.
 * Unlike the dev server it needs no relay's TLS: a MigraVI process presents the client
 * certificate made by the set-up and checks the server's against the same authority.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, chown, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Connection } from '@temporalio/client';
import { msToTs } from '@temporalio/common';
import { stringify } from 'yaml';
import { run } from './exec';
import { depsDir, repoRoot } from './paths';
import { isAlive, startService, stopPid, waitFor } from './processes';
import { ensureCertificateAuthority, issueServerCertificate, loadTlsConfig, TEMPORAL_SERVER_NAME, tlsDirPath, type TemporalTlsFiles } from './temporal-tls';

export const temporalServerPath = path.join(depsDir, 'bin', 'temporal-server');
export const temporalSqlToolPath = path.join(depsDir, 'bin', 'temporal-sql-tool');
const POSTGRES_BIN = '/usr/lib/postgresql/15/bin';
const DB_USER = 'temporal';
const DATABASES = { temporal: 'temporal', visibility: 'temporal_visibility' } as const;

export interface ProductionTemporalOptions {
  /** Where the cluster keeps its database, configuration, certificates and logs (created, kept across restarts). */
  dir: string;
  /** The frontend's gRPC port; the other services take the next ports (see servicePorts). */
  port: number;
  /** PostgreSQL's port on the loopback. */
  postgresPort: number;
  /** The one address every port binds to (default the loopback). */
  bindAddress?: string;
  /** History shards (default 4: a small cluster's; the dev server has 1). */
  historyShards?: number;
}

export interface ProductionTemporal {
  address: string;
  /** What a client presents (MigraVI's certificate, the authority, the server's name). */
  tls: TemporalTlsFiles;
  pids: { postgres: number; server: number };
  /** psql on the cluster's database, as its superuser: what is stored, read without Temporal. */
  query(database: keyof typeof DATABASES, sql: string): Promise<string>;
  stop(): Promise<void>;
}

/** The ports a cluster on `port` listens on: gRPC for the four services, then their membership (ringpop) ports. */
export function servicePorts(port: number) {
  return {
    frontend: { grpcPort: port, membershipPort: port + 10, httpPort: port + 4 },
    history: { grpcPort: port + 1, membershipPort: port + 11 },
    matching: { grpcPort: port + 2, membershipPort: port + 12 },
    worker: { grpcPort: port + 3, membershipPort: port + 13 },
  };
}

/** Refuses, before anything is created, a cluster whose binaries the set-up has not built. */
function checkInstalled(): void {
  for (const [what, file] of [['server', temporalServerPath], ['schema tool', temporalSqlToolPath], ['PostgreSQL', path.join(POSTGRES_BIN, 'postgres')]] as const) {
    if (!existsSync(file)) throw new Error(`the production Temporal ${what} is missing (${file}): run scripts/setup.sh`);
  }
}

/** As PostgreSQL's own account: it refuses to run as root. setpriv execs, so the PID is the program's. */
const asPostgres = (argv: string[]) => ['setpriv', '--reuid=postgres', '--regid=postgres', '--init-groups', ...argv];

async function startPostgres(dir: string, port: number): Promise<{ pid: number; password: string; socketDir: string }> {
  const data = path.join(dir, 'postgres');
  const socketDir = path.join(dir, 'postgres-socket');
  const passwordFile = path.join(dir, 'postgres-password');
  await mkdir(socketDir, { recursive: true });
  await chown(socketDir, ...(await postgresIds()));
  if (!existsSync(path.join(data, 'PG_VERSION'))) {
    await mkdir(data, { recursive: true, mode: 0o700 });
    await chown(data, ...(await postgresIds()));
    // Local (socket) logins by the OS account only; TCP logins on the loopback by password.
    const initdb = asPostgres([path.join(POSTGRES_BIN, 'initdb'), '-D', data, '-U', 'postgres', '--auth-local=peer', '--auth-host=scram-sha-256', '--encoding=UTF8', '--no-instructions']);
    await run(initdb[0]!, initdb.slice(1));
    await writeFile(passwordFile, randomBytes(24).toString('base64url'), { mode: 0o600 });
  }
  const password = (await readFile(passwordFile, 'utf8')).trim();
  const argv = asPostgres([path.join(POSTGRES_BIN, 'postgres'), '-D', data, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-c', `unix_socket_directories=${socketDir}`]);
  const pid = await startService({ name: 'PostgreSQL (Temporal)', argv, logFile: path.join(dir, 'postgres.log'), readyLine: /database system is ready to accept connections/ });
  return { pid, password, socketDir };
}

async function postgresIds(): Promise<[number, number]> {
  const [uid, gid] = await Promise.all([run('id', ['-u', 'postgres']), run('id', ['-g', 'postgres'])]);
  return [Number(uid.stdout.trim()), Number(gid.stdout.trim())];
}

function psql(socketDir: string, port: number, database: string, sql: string): Promise<string> {
  // The statement on standard input: a password in it is not on any command line (ps).
  const argv = asPostgres([path.join(POSTGRES_BIN, 'psql'), '-h', socketDir, '-p', String(port), '-d', database, '-U', 'postgres', '-v', 'ON_ERROR_STOP=1', '-At', '-q']);
  return run(argv[0]!, argv.slice(1), { input: sql }).then((r) => r.stdout.trim());
}

/** The role and both databases, their schemas brought to the server's version by its own tool (idempotent). */
async function prepareDatabases(socketDir: string, port: number, password: string): Promise<void> {
  const role = await psql(socketDir, port, 'postgres', `SELECT 1 FROM pg_roles WHERE rolname = '${DB_USER}'`);
  const quoted = password.replace(/'/g, "''");
  await psql(socketDir, port, 'postgres', role ? `ALTER ROLE ${DB_USER} LOGIN PASSWORD '${quoted}'` : `CREATE ROLE ${DB_USER} LOGIN PASSWORD '${quoted}'`);
  for (const [schema, database] of Object.entries(DATABASES)) {
    const created = !(await psql(socketDir, port, 'postgres', `SELECT 1 FROM pg_database WHERE datname = '${database}'`));
    if (created) await psql(socketDir, port, 'postgres', `CREATE DATABASE ${database} OWNER ${DB_USER}`);
    const tool = ['--plugin', 'postgres12', '--endpoint', '127.0.0.1', '--port', String(port), '--user', DB_USER, '--database', database];
    const env = { ...process.env, SQL_PASSWORD: password };
    // A new database gets the version table (at 0.0); update-schema then applies each of the tool's
    // own versioned steps (embedded in it, so they match the server) the database lacks.
    if (created) await run(temporalSqlToolPath, [...tool, 'setup-schema', '-v', '0.0'], { env });
    await run(temporalSqlToolPath, [...tool, 'update-schema', '--schema-name', `postgresql/v12/${schema}`], { env });
  }
}

function serverConfig(opts: Required<ProductionTemporalOptions>, password: string, cert: { cert: string; key: string; ca: string }, client: TemporalTlsFiles) {
  const bind = opts.bindAddress;
  const ports = servicePorts(opts.port);
  const sql = (databaseName: string, maxConns: number) => ({
    sql: { pluginName: 'postgres12', databaseName, connectAddr: `127.0.0.1:${opts.postgresPort}`, connectProtocol: 'tcp', user: DB_USER, password, maxConns, maxIdleConns: maxConns, maxConnLifetime: '1h' },
  });
  const server = { certFile: cert.cert, keyFile: cert.key, requireClientAuth: true, clientCaFiles: [cert.ca] };
  const tlsClient = { serverName: TEMPORAL_SERVER_NAME, rootCaFiles: [cert.ca] };
  return {
    log: { stdout: true, level: 'warn' },
    persistence: {
      defaultStore: 'postgres-default',
      visibilityStore: 'postgres-visibility',
      numHistoryShards: opts.historyShards,
      datastores: { 'postgres-default': sql(DATABASES.temporal, 20), 'postgres-visibility': sql(DATABASES.visibility, 4) },
    },
    global: {
      membership: { maxJoinDuration: '30s', broadcastAddress: bind },
      tls: {
        // Internode: each service presents the server certificate (serverAuth and clientAuth) to the others.
        internode: { server, client: tlsClient },
        frontend: { server, client: tlsClient },
        // The server's own workers (scheduler, archival…) log in to the frontend like any client.
        systemWorker: { certFile: client.cert, keyFile: client.key, client: tlsClient },
      },
    },
    services: Object.fromEntries(Object.entries(ports).map(([name, rpc]) => [name, { rpc: { ...rpc, bindOnIP: bind } }])),
    clusterMetadata: {
      enableGlobalNamespace: false,
      failoverVersionIncrement: 10,
      masterClusterName: 'active',
      currentClusterName: 'active',
      clusterInformation: { active: { enabled: true, initialFailoverVersion: 1, rpcName: 'frontend', rpcAddress: `${bind}:${opts.port}`, httpAddress: `${bind}:${ports.frontend.httpPort}` } },
    },
    dcRedirectionPolicy: { policy: 'noop' },
    archival: { history: { state: 'disabled' }, visibility: { state: 'disabled' } },
    namespaceDefaults: { archival: { history: { state: 'disabled' }, visibility: { state: 'disabled' } } },
    // MigraVI's dynamic configuration, the one temporal-compose.yml mounts (a migration's hand-offs not rate-limited).
    dynamicConfigClient: { filepath: path.join(repoRoot, 'deploy', 'temporal-dynamicconfig.yaml'), pollInterval: '10s' },
  };
}

/** Connects as MigraVI (mutual TLS); `namespace` registered once, as the dev server's `default` is. */
async function ensureNamespace(address: string, tls: TemporalTlsFiles, namespace: string): Promise<void> {
  const connection = await Connection.connect({ address, tls: await loadTlsConfig(tls) });
  try {
    const known = await connection.workflowService.describeNamespace({ namespace }).then(() => true, () => false);
    if (!known) await connection.workflowService.registerNamespace({ namespace, workflowExecutionRetentionPeriod: msToTs('3 days') });
    // Registration reaches the frontend's namespace cache a moment later: wait until it serves it.
    await waitFor(`namespace ${namespace} on ${address}`, () => connection.workflowService.describeNamespace({ namespace }).then(() => true, () => false), 30_000, 200);
  } finally {
    await connection.close();
  }
}

/** Starts PostgreSQL and the server from `dir` (its database kept from an earlier start) and returns once `default` is served over mutual TLS. */
export async function startProductionTemporal(options: ProductionTemporalOptions): Promise<ProductionTemporal> {
  checkInstalled();
  const opts: Required<ProductionTemporalOptions> = { bindAddress: '127.0.0.1', historyShards: 4, ...options };
  // PostgreSQL's account walks down to its data directory.
  await mkdir(opts.dir, { recursive: true });
  await chmod(opts.dir, 0o755);
  const tlsDir = tlsDirPath();
  const client = (await ensureCertificateAuthority(tlsDir)).files;
  const tls: TemporalTlsFiles = { ...client, serverName: TEMPORAL_SERVER_NAME };
  const address = `${opts.bindAddress}:${opts.port}`;
  const postgres = await startPostgres(opts.dir, opts.postgresPort);
  const stopAll: number[] = [postgres.pid];
  try {
    await prepareDatabases(postgres.socketDir, opts.postgresPort, postgres.password);
    const cert = await issueServerCertificate(path.join(opts.dir, 'tls'), 'server', [opts.bindAddress], tlsDir, { internode: true });
    await mkdir(path.join(opts.dir, 'config'), { recursive: true, mode: 0o700 });
    await writeFile(path.join(opts.dir, 'config', 'production.yaml'), stringify(serverConfig(opts, postgres.password, cert, client)), { mode: 0o600 });
    const server = await startService({
      name: 'Temporal server',
      argv: [temporalServerPath, '--root', opts.dir, '--config', 'config', '--env', 'production', '--allow-no-auth', 'start'],
      logFile: path.join(opts.dir, 'server.log'),
      timeoutMs: 120_000,
    });
    stopAll.unshift(server);
    await waitFor(`Temporal server at ${address} (mutual TLS)`, async () => {
      if (!isAlive(server)) throw new Error(`the Temporal server exited: see ${path.join(opts.dir, 'server.log')}`);
      return ensureNamespace(address, tls, 'default').then(() => true, () => false);
    }, 120_000, 500);
    return {
      address,
      tls,
      pids: { postgres: postgres.pid, server },
      query: (database, sql) => psql(postgres.socketDir, opts.postgresPort, DATABASES[database], sql),
      async stop() {
        for (const pid of stopAll) await stopPid(pid, 30_000);
      },
    };
  } catch (err) {
    for (const pid of stopAll) await stopPid(pid, 30_000);
    throw err;
  }
}
