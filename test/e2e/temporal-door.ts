/**
 * Who gets into Temporal: a client at an address, with MigraVI's certificate, with none, with one
 * another authority signed, or in plaintext. Shared by the tests of the relay's TLS
 * (live-migration) and of the production-style server's own (temporal-production).
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Connection, type TLSConfig } from '@temporalio/client';
import { ensureCertificateAuthority, loadTlsConfig, TEMPORAL_SERVER_NAME } from '../../lib/temporal-tls';

/** "connected" when a client at `address` gets an answer from Temporal, else why not. */
export async function temporalAnswers(address: string, tls: TLSConfig | undefined): Promise<string> {
  let connection: Connection | undefined;
  try {
    connection = await Connection.connect({ address, connectTimeout: '3s', ...(tls === undefined ? {} : { tls }) });
    await connection.workflowService.describeNamespace({ namespace: 'default' });
    return 'connected';
  } catch (err) {
    return (err as Error).message;
  } finally {
    await connection?.close();
  }
}

/** MigraVI's own client TLS (the set-up's authority and certificate). */
export async function migraviTls(): Promise<TLSConfig> {
  return loadTlsConfig({ ...(await ensureCertificateAuthority()).files, serverName: TEMPORAL_SERVER_NAME });
}

/**
 * Another authority, made in a directory of its own for the describe block that calls this (mocha
 * hooks), with its client certificate: what a stranger who runs the same tools would present.
 */
export function anotherAuthority(): () => Promise<{ ca: string; cert: string; key: string }> {
  let dir: string | undefined;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'migravi-other-ca-'));
    await ensureCertificateAuthority(dir);
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });
  return async () => (await ensureCertificateAuthority(dir)).files;
}

/** No certificate, another authority's, plaintext: each refused at `address`. */
export async function assertStrangersRefused(address: string, theirs: { cert: string; key: string }): Promise<void> {
  const ours = (await ensureCertificateAuthority()).files;
  const noCertificate = await temporalAnswers(address, { serverRootCACertificate: await readFile(ours.ca), serverNameOverride: TEMPORAL_SERVER_NAME });
  assert.notEqual(noCertificate, 'connected', 'a client without a certificate got through');
  const foreign = await temporalAnswers(address, await loadTlsConfig({ ca: ours.ca, cert: theirs.cert, key: theirs.key, serverName: TEMPORAL_SERVER_NAME }));
  assert.notEqual(foreign, 'connected', 'a certificate of another authority got through');
  assert.notEqual(await temporalAnswers(address, undefined), 'connected', 'a plaintext client got through');
}
