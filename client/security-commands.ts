/**
 * `migravi keys init|rotate|list` (the payload key ring every client and worker encrypts with)
 * and `migravi codec-server` (the endpoint through which the Web UI shows decoded payloads to
 * an operator who holds the ring).
 */
import type { Command } from 'commander';
import { ensureKeyRing, loadKeyRing, payloadKeysPath, rotateKeyRing } from '../lib/payload-keys';
import { Output, positive, type Globals } from './cli-common';
import { startCodecServer } from './codec-server';
import { ensureCertificateAuthority, tlsDirPath } from '../lib/temporal-tls';

export function securityCommands(cli: Command, globals: Globals): void {
  cli.command('tls').description("mutual TLS to Temporal: the certificate authority and MigraVI's client certificate")
    .command('init').description('create the authority and the client certificate if there are none (existing ones are kept)')
    .option('--dir <dir>', 'where (default MIGRAVI_TLS_DIR, else /var/lib/migravi/tls)')
    .action(async (o: { dir?: string }, cmd: Command) => {
      const g = globals(cmd);
      const dir = tlsDirPath(o.dir);
      const { created, files } = await ensureCertificateAuthority(dir);
      new Output(g.json).result({ dir, created, ...files }, () => [created ? `created the authority ${files.ca} and the client certificate ${files.cert} (keys mode 600)` : `${dir} holds an authority already: kept`]);
    });
  const keys = cli.command('keys').description("the payload key ring (AES-256-GCM): every client and worker loads it (--payload-keys or MIGRAVI_PAYLOAD_KEYS)");
  keys.command('init').description('create the key ring if there is none (an existing one is kept)')
    .action(async (_o: unknown, cmd: Command) => {
      const g = globals(cmd);
      const file = payloadKeysPath(g.payloadKeys);
      const { created, ring } = await ensureKeyRing(file);
      new Output(g.json).result({ file, created, current: ring.current }, () => [created ? `created ${file} (key ${ring.current}, mode 600)` : `${file} exists (current key ${ring.current}): kept`]);
    });
  keys.command('rotate').description('add a key and make it current; the old keys stay so earlier histories still decrypt (copy the file to every worker and restart them)')
    .action(async (_o: unknown, cmd: Command) => {
      const g = globals(cmd);
      const file = payloadKeysPath(g.payloadKeys);
      const ring = await rotateKeyRing(file);
      new Output(g.json).result({ file, current: ring.current, keys: [...ring.keys.keys()] }, () => [`${file}: new payloads are sealed with ${ring.current}; ${ring.keys.size} keys decrypt`]);
    });
  keys.command('list').description('the key ids (never the keys) and which one is current')
    .action(async (_o: unknown, cmd: Command) => {
      const g = globals(cmd);
      const file = payloadKeysPath(g.payloadKeys);
      const ring = await loadKeyRing(file);
      new Output(g.json).result({ file, current: ring.current, keys: [...ring.keys.keys()] }, () => [...ring.keys.keys()].map((id) => `${id}${id === ring.current ? '  (current)' : ''}`));
    });
  cli.command('codec-server').description("serve the Web UI's codec endpoint (temporal server start-dev --ui-codec-endpoint URL): decoded payloads for whoever holds the key ring")
    .option('--host <ip>', 'where it listens (whoever reaches it can decrypt)', '127.0.0.1')
    .option('--port <port>', 'its port', '8234')
    .option('--ui-origin <url...>', "the Web UI's origin(s) allowed to call it", ['http://localhost:8233', 'http://127.0.0.1:8233'])
    .action(async (o: { host: string; port: string; uiOrigin: string[] }, cmd: Command) => {
      const g = globals(cmd);
      const out = new Output(g.json);
      const ring = await loadKeyRing(payloadKeysPath(g.payloadKeys));
      const server = await startCodecServer({ ring, host: o.host, port: positive(o.port, '--port'), origins: o.uiOrigin, log: (line) => out.line(line) });
      out.line(`codec server ready: ${server.url} for ${o.uiOrigin.join(', ')} (key ring with ${ring.keys.size} keys)`);
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      await server.close();
    });
}
