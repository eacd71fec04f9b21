/**
 * The embedded world's authoritative DNS: PowerDNS with its SQLite backend and HTTP API
 * (PLATFORM.md, "DNS, measured"), run by the testbed in the edge namespace of the cloud that
 * offers DNS, like a cloud's DNS service (OpenStack: Designate). It answers on the cloud's
 * public address, port 53; its API listens on 127.0.0.1 inside that namespace, so only that
 * cloud's worker reaches it. Caches are off: a record changed through the API is answered at once.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { run } from '../../lib/exec';
import { startService } from '../../lib/processes';
import type { LocalCloudConfig } from './cloud-config';

const SCHEMA = '/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql';
export const DNS_API_PORT = 8081;

/** Creates the server's database and zones, starts it, and returns its PID and what the cloud config records. */
export async function startDnsServer(cfg: LocalCloudConfig, zones: string[]): Promise<{ pid: number; dns: NonNullable<LocalCloudConfig['dns']> }> {
  const dir = path.join(cfg.dir, 'dns');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const database = path.join(dir, 'pdns.sqlite3');
  const apiKeyPath = path.join(dir, 'api-key');
  const apiKey = randomBytes(24).toString('hex');
  await writeFile(apiKeyPath, apiKey, { mode: 0o600 });
  await run('sqlite3', [database], { input: await readFile(SCHEMA, 'utf8') });
  await writeFile(
    path.join(dir, 'pdns.conf'),
    [
      'launch=gsqlite3',
      `gsqlite3-database=${database}`,
      `local-address=${cfg.publicIp}`,
      'local-port=53',
      'api=yes',
      `api-key=${apiKey}`,
      'webserver=yes',
      'webserver-address=127.0.0.1',
      `webserver-port=${DNS_API_PORT}`,
      'webserver-allow-from=127.0.0.1/32',
      'daemon=no',
      'guardian=no',
      `socket-dir=${dir}`,
      // Answers reflect the API at once (a migration's switch is visible to the next query).
      'cache-ttl=0',
      'query-cache-ttl=0',
      'negquery-cache-ttl=0',
      '',
    ].join('\n'),
    { mode: 0o600 },
  );
  for (const zone of zones) {
    await run('pdnsutil', [`--config-dir=${dir}`, 'create-zone', zone.replace(/\.$/, ''), `ns1.${zone.replace(/\.$/, '')}`]);
  }
  const pid = await startService({
    name: `PowerDNS of ${cfg.name}`,
    argv: ['nsenter', `--net=/run/netns/${cfg.netns}`, 'pdns_server', `--config-dir=${dir}`],
    logFile: path.join(dir, 'pdns.log'),
    readyLine: /ready to distribute questions/,
    timeoutMs: 20_000,
  });
  return { pid, dns: { server: cfg.publicIp, apiUrl: `http://127.0.0.1:${DNS_API_PORT}/api/v1/servers/localhost`, apiKeyPath } };
}
