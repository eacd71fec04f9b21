/**
 * Mutual TLS to Temporal: a certificate authority the set-up makes (`migravi tls init`), the
 * client certificate every MigraVI worker and client presents, and server certificates for the
 * endpoints that take connections from beyond the host (the relay on the host link). Keys are
 * root's only (0600); a key others can read is refused, like the payload key ring.
 *
 *   <dir>/ca.pem, ca.key          the authority (its key signs, and never leaves this directory)
 *   <dir>/client.pem, client.key  MigraVI's workers and clients (CN migravi-client)
 */
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { TLSConfig } from '@temporalio/client';
import { run } from './exec';

export const DEFAULT_TLS_DIR = '/var/lib/migravi/tls';
export const tlsDirPath = (explicit?: string): string => explicit ?? process.env.MIGRAVI_TLS_DIR ?? DEFAULT_TLS_DIR;
/** The name server certificates carry besides their addresses; clients verify it (an address may change, the name does not). */
export const TEMPORAL_SERVER_NAME = 'temporal.migravi';

/** The files a connection presents and trusts. */
export interface TemporalTlsFiles {
  /** The authority whose signature the server's certificate must carry. */
  ca: string;
  /** This client's certificate and key (the server requires one). */
  cert: string;
  key: string;
  /** The name the server's certificate must hold (default: the address's host). */
  serverName?: string;
}

export class TlsFilesError extends Error {}

const DAYS = '825';

async function openssl(args: string[], input?: string): Promise<void> {
  await run('openssl', args, input === undefined ? {} : { input });
}

/** Creates the authority and MigraVI's client certificate if missing; an existing pair is kept. */
export async function ensureCertificateAuthority(dir = tlsDirPath()): Promise<{ created: boolean; files: TemporalTlsFiles }> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const files = { ca: path.join(dir, 'ca.pem'), cert: path.join(dir, 'client.pem'), key: path.join(dir, 'client.key') };
  if (existsSync(files.ca) && existsSync(files.cert) && existsSync(files.key)) return { created: false, files };
  const caKey = path.join(dir, 'ca.key');
  await openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', caKey, '-out', files.ca, '-days', '3650', '-subj', '/O=MigraVI/CN=MigraVI Temporal CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  await chmod(caKey, 0o600);
  await issueCertificate(dir, 'client', 'migravi-client', ['extendedKeyUsage=clientAuth']);
  return { created: true, files };
}

/**
 * A server certificate signed by the authority, for `addresses` and TEMPORAL_SERVER_NAME, written as <name>.pem/.key in `outDir`.
 * `internode`: also a client certificate, for a cluster's services, which present it to each other.
 */
export async function issueServerCertificate(outDir: string, name: string, addresses: string[], dir = tlsDirPath(), usage: { internode?: boolean } = {}): Promise<{ cert: string; key: string; ca: string }> {
  await mkdir(outDir, { recursive: true, mode: 0o700 });
  const san = [`DNS:${TEMPORAL_SERVER_NAME}`, ...addresses.map((a) => (/^\d+\.\d+\.\d+\.\d+$/.test(a) ? `IP:${a}` : `DNS:${a}`))].join(',');
  await issueCertificate(dir, name, TEMPORAL_SERVER_NAME, [`extendedKeyUsage=serverAuth${usage.internode ? ',clientAuth' : ''}`, `subjectAltName=${san}`], outDir);
  return { cert: path.join(outDir, `${name}.pem`), key: path.join(outDir, `${name}.key`), ca: path.join(dir, 'ca.pem') };
}

async function issueCertificate(dir: string, name: string, commonName: string, extensions: string[], outDir = dir): Promise<void> {
  const key = path.join(outDir, `${name}.key`);
  const csr = path.join(outDir, `${name}.csr`);
  const ext = path.join(outDir, `${name}.ext`);
  try {
    await openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', csr, '-subj', `/O=MigraVI/CN=${commonName}`]);
    await writeFile(ext, `${extensions.join('\n')}\n`);
    await chmod(key, 0o600);
    await openssl(['x509', '-req', '-in', csr, '-CA', path.join(dir, 'ca.pem'), '-CAkey', path.join(dir, 'ca.key'), '-CAcreateserial', '-out', path.join(outDir, `${name}.pem`), '-days', DAYS, '-extfile', ext]);
  } finally {
    await rm(csr, { force: true });
    await rm(ext, { force: true });
  }
}

/** The files as the SDK's connections take them; a key readable by others, or a missing file, is refused by name. */
export async function loadTlsConfig(files: TemporalTlsFiles): Promise<TLSConfig> {
  const read = async (what: string, file: string) => {
    try {
      return await readFile(file);
    } catch {
      throw new TlsFilesError(`the Temporal TLS ${what} ${file} cannot be read: run \`migravi tls init\` or name another file`);
    }
  };
  const [ca, cert, key] = [await read('authority', files.ca), await read('certificate', files.cert), await read('key', files.key)];
  const mode = (await stat(files.key)).mode & 0o777;
  if (mode & 0o077) throw new TlsFilesError(`the Temporal TLS key ${files.key} is readable by others (mode ${mode.toString(8)}): chmod 600 ${files.key}`);
  return { serverRootCACertificate: ca, clientCertPair: { crt: cert, key }, ...(files.serverName ? { serverNameOverride: files.serverName } : {}) };
}
