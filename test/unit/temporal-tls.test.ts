/**
 * The certificate authority and certificates for mutual TLS to Temporal, checked with openssl
 * itself (verification against the authority, the extensions it reads), and the refusals of
 * unsafe or incomplete TLS configuration. The handshakes themselves: test/e2e/live-migration.test.ts.
 */
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { run } from '../../lib/exec';
import { tlsFilesFrom } from '../../lib/temporal-access';
import { ensureCertificateAuthority, issueServerCertificate, loadTlsConfig, TEMPORAL_SERVER_NAME, TlsFilesError } from '../../lib/temporal-tls';

describe('mutual TLS files for Temporal (authority, client and server certificates)', () => {
  let dir: string;

  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'migravi-tls-'));
  });
  afterEach(async () => rm(dir, { recursive: true, force: true }));

  it('makes an authority and a client certificate it signed, keys readable by root only, and keeps them', async () => {
    const { created, files } = await ensureCertificateAuthority(path.join(dir, 'tls'));
    assert.equal(created, true);
    const verified = await run('openssl', ['verify', '-CAfile', files.ca, files.cert]);
    assert.match(verified.stdout, /: OK/);
    const usage = await run('openssl', ['x509', '-in', files.cert, '-noout', '-ext', 'extendedKeyUsage', '-subject']);
    assert.match(usage.stdout, /TLS Web Client Authentication/);
    for (const key of [files.key, path.join(dir, 'tls', 'ca.key')]) assert.equal((await stat(key)).mode & 0o777, 0o600, key);
    const again = await ensureCertificateAuthority(path.join(dir, 'tls'));
    assert.equal(again.created, false);
    assert.equal(await readFile(again.files.ca, 'utf8'), await readFile(files.ca, 'utf8'), 'the authority was replaced');
  });

  it('issues a server certificate for its addresses and the server name, which another authority does not vouch for', async () => {
    await ensureCertificateAuthority(path.join(dir, 'tls'));
    const server = await issueServerCertificate(path.join(dir, 'relay'), 'relay', ['198.18.0.5'], path.join(dir, 'tls'));
    assert.match((await run('openssl', ['verify', '-CAfile', server.ca, server.cert])).stdout, /: OK/);
    const san = (await run('openssl', ['x509', '-in', server.cert, '-noout', '-ext', 'subjectAltName,extendedKeyUsage'])).stdout;
    assert.match(san, /IP Address:198\.18\.0\.5/);
    assert.match(san, new RegExp(`DNS:${TEMPORAL_SERVER_NAME.replace('.', '\\.')}`));
    assert.match(san, /TLS Web Server Authentication/);
    const other = await ensureCertificateAuthority(path.join(dir, 'other'));
    const foreign = await run('openssl', ['verify', '-CAfile', other.files.ca, server.cert], { allowFailure: true });
    assert.notEqual(foreign.exitCode, 0, 'another authority verifies the server certificate');
  });

  it('refuses a key others can read, and a missing file, by name', async () => {
    const { files } = await ensureCertificateAuthority(path.join(dir, 'tls'));
    const config = await loadTlsConfig(files);
    assert.ok(config.clientCertPair && config.serverRootCACertificate);
    await chmod(files.key, 0o644);
    await assert.rejects(loadTlsConfig(files), (err: Error) => err instanceof TlsFilesError && err.message.includes(files.key) && /chmod 600/.test(err.message));
    await assert.rejects(loadTlsConfig({ ...files, ca: path.join(dir, 'nowhere.pem') }), (err: Error) => err instanceof TlsFilesError && err.message.includes('nowhere.pem'));
  });

  it('takes the three files together or none, naming what is missing', () => {
    assert.equal(tlsFilesFrom({}), undefined);
    assert.deepEqual(tlsFilesFrom({ ca: 'a', cert: 'b', key: 'c' }), { ca: 'a', cert: 'b', key: 'c' });
    assert.throws(() => tlsFilesFrom({ ca: 'a', key: 'c' }), /--temporal-tls-ca, --temporal-tls-cert and --temporal-tls-key go together: only --temporal-tls-ca, --temporal-tls-key given/);
  });
});
