/**
 * MigraVI on the production-style Temporal cluster (lib/temporal-production.ts): the server built
 * from its Go module, its state in PostgreSQL, mutual TLS on the frontend, the internode gRPC ports and
 * the server's own workers. A live migration runs on it end to end with every worker connecting by
 * configuration (MigraVI's certificate); what it stored is read from PostgreSQL, not from Temporal;
 * clients without MigraVI's certificate are refused on every port the cluster listens on.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { connect as tlsConnect } from 'node:tls';
import { followMigration, startMigration } from '../../client/migravi-client';
import type { ClientStatus } from '../../demo/client';
import { KV_IP } from '../../demo/demo-vi';
import { run } from '../../lib/exec';
import { servicePorts } from '../../lib/temporal-production';
import { TEMPORAL_SERVER_NAME } from '../../lib/temporal-tls';
import type { MigrationReport } from '../../lib/types';
import { E2eStack, TEMPORAL_PORT } from './stack';
import { anotherAuthority, assertStrangersRefused, migraviTls, temporalAnswers } from './temporal-door';

describe('a migration on the production-style Temporal cluster (PostgreSQL, mutual TLS on every gRPC port)', function () {
  this.timeout(300_000);
  let stack: E2eStack;
  let statusBefore: ClientStatus;
  let report: MigrationReport;
  let workflowId: string;

  before(async () => {
    stack = await E2eStack.start({ id: 'mvprod', ballastMiB: 16, temporal: 'production' });
    statusBefore = await stack.client.waitForReplies(20);
    const handle = await startMigration(stack.temporal, { name: 'production', source: 'cloud-a', destination: 'cloud-b', containers: ['kv'] });
    workflowId = handle.workflowId;
    report = await followMigration(handle, () => undefined, 200);
  });

  after(async function () {
    const unhappy = this.test?.parent?.tests.some((t) => t.state !== 'passed') ?? true;
    await stack?.stop(unhappy);
  });

  it('moves the container live: the client keeps its one connection, the service runs in cloud-b only', async () => {
    assert.equal(report.containers[0]?.name, 'kv');
    await stack.assertConnectionKept(statusBefore, 20);
    await stack.assertOnlyAt('cloud-b');
  });

  it('keeps the migration in PostgreSQL: its visibility row says completed, its history rows hold no plaintext of the plan', async () => {
    const production = stack.production!;
    // WorkflowExecutionStatus 2 = completed, as the server wrote it to its visibility database.
    assert.equal(await production.query('visibility', `SELECT status FROM executions_visibility WHERE workflow_id = '${workflowId}'`), '2');
    const rows = (await production.query('temporal', `SELECT encode(h.data, 'base64') FROM history_node h JOIN executions e ON h.tree_id = e.run_id WHERE e.workflow_id = '${workflowId}'`))
      .split('\n').filter(Boolean);
    const history = Buffer.concat(rows.map((row) => Buffer.from(row, 'base64')));
    assert.ok(rows.length >= 3 && history.length > 1000, `${rows.length} history rows, ${history.length} bytes`);
    // The rows are the history as stored (the workflow's type and task queue are in them, in plain)…
    assert.ok(history.includes('migrateInfrastructure'), "the rows are not this workflow's history: its type is not in them");
    // …and its payloads sealed by MigraVI's codec.
    for (const plain of ['"containers"', '"destination"', '"bytesMoved"', KV_IP]) assert.equal(history.indexOf(plain), -1, `PostgreSQL holds ${plain} in plaintext`);
  });

  describe('who gets in', () => {
    const theirs = anotherAuthority();

    /** The TLS handshake at `port` with `cert` (or none): "accepted" once the server has taken the client's side of it. */
    function handshake(port: number, ca: Buffer, cert?: { cert: Buffer; key: Buffer }): Promise<string> {
      return new Promise((resolve) => {
        const socket = tlsConnect({ host: '127.0.0.1', port, ca, servername: TEMPORAL_SERVER_NAME, ALPNProtocols: ['h2'], ...(cert ?? {}) });
        socket.setTimeout(3_000, () => socket.destroy(new Error('timed out')));
        // TLS 1.3 reports a refused client certificate after the handshake, on the first read: wait for one.
        socket.once('secureConnect', () => socket.write(Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0', 'binary')));
        socket.once('data', () => {
          socket.destroy();
          resolve('accepted');
        });
        socket.once('error', (err) => resolve(err.message));
        socket.once('close', () => resolve('closed'));
      });
    }

    it("answers MigraVI's certificate at the frontend", async () => {
      assert.equal(await temporalAnswers(`127.0.0.1:${TEMPORAL_PORT}`, await migraviTls()), 'connected');
    });

    it('refuses at the frontend a client without a certificate, one of another authority, and one without TLS', async () => {
      await assertStrangersRefused(`127.0.0.1:${TEMPORAL_PORT}`, await theirs());
    });

    it('requires the certificate on the internode gRPC ports too (history, matching): accepted with it, refused without', async () => {
      const ca = await readFile(stack.production!.tls.ca);
      const ours = { cert: await readFile(stack.production!.tls.cert), key: await readFile(stack.production!.tls.key) };
      const stranger = await theirs();
      const foreign = { cert: await readFile(stranger.cert), key: await readFile(stranger.key) };
      const ports = servicePorts(TEMPORAL_PORT);
      for (const [service, port] of [['history', ports.history.grpcPort], ['matching', ports.matching.grpcPort]] as const) {
        assert.equal(await handshake(port, ca, ours), 'accepted', `${service} refused MigraVI's certificate`);
        assert.notEqual(await handshake(port, ca), 'accepted', `${service} let a client without a certificate in`);
        assert.notEqual(await handshake(port, ca, foreign), 'accepted', `${service} let another authority's certificate in`);
      }
    });

    it('listens on the loopback only: every socket of the server (membership gossip has no TLS) and of PostgreSQL', async () => {
      const { server, postgres } = stack.production!.pids;
      const sockets = (await run('ss', ['-ltnpH'])).stdout.split('\n').filter((line) => new RegExp(`pid=(${server}|${postgres}),`).test(line));
      const local = sockets.map((line) => line.trim().split(/\s+/)[3]!);
      // frontend (gRPC and HTTP), history, matching, four membership ports, PostgreSQL: at least these.
      assert.ok(local.length >= 8, `the cluster listens on ${local.join(', ')}`);
      for (const address of local) assert.match(address, /^127\.0\.0\.1:\d+$/, `the cluster listens on ${address}`);
    });
  });
});
