/**
 * The orchestrator worker: runs the migration workflows (task queue "migravi"). It holds no cloud
 * credentials and touches no cloud; activities run on the cloud workers.
 *   node dist/workers/orchestrator.js [--temporal 127.0.0.1:7233] [--namespace default] [--metrics 127.0.0.1:9464]
 */
import { parseArgs } from 'node:util';
import { NativeConnection, Worker, type InjectedSinks } from '@temporalio/worker';
import { faultPoint } from '../lib/faults';
import type { FaultSinks } from '../workflows/fault-sinks';
import { loadDataConverter, tlsFilesFrom } from '../lib/temporal-access';
import { loadTlsConfig } from '../lib/temporal-tls';
import { installTelemetry } from './telemetry';
import { cachedWorkflowBundle } from './workflow-bundle';
import { ORCHESTRATOR_TASK_QUEUE } from '../lib/plan';
import { ensureSearchAttributes } from '../lib/register-search-attributes';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      temporal: { type: 'string', default: process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233' },
      namespace: { type: 'string', default: process.env.TEMPORAL_NAMESPACE ?? 'default' },
      /** Where its Prometheus endpoint listens (none by default). */
      metrics: { type: 'string' },
      /** The payload key ring (default MIGRAVI_PAYLOAD_KEYS, else /var/lib/migravi/keys/payload-keys.json). */
      'payload-keys': { type: 'string' },
      /** Mutual TLS to a Temporal beyond the loopback: the authority, this worker's certificate and key, and the server's name. */
      'temporal-tls-ca': { type: 'string' },
      'temporal-tls-cert': { type: 'string' },
      'temporal-tls-key': { type: 'string' },
      'temporal-tls-server-name': { type: 'string' },
    },
  });
  installTelemetry({ ...(values.metrics ? { metrics: values.metrics } : {}) });
  // Every payload it sends is sealed with the ring's current key (lib/payload-codec.ts).
  const dataConverter = await loadDataConverter({ ...(values['payload-keys'] ? { payloadKeys: values['payload-keys'] } : {}) });
  const tlsFiles = tlsFilesFrom({ ca: values['temporal-tls-ca'], cert: values['temporal-tls-cert'], key: values['temporal-tls-key'], serverName: values['temporal-tls-server-name'] });
  const tls = tlsFiles ? await loadTlsConfig(tlsFiles) : undefined;
  const connection = await NativeConnection.connect({ address: values.temporal, ...(tls ? { tls } : {}) });
  const added = await ensureSearchAttributes(connection, values.namespace);
  if (added.length) console.log(`added the search attributes ${added.join(', ')} to namespace ${values.namespace}`);
  const worker = await Worker.create({
    connection,
    namespace: values.namespace,
    dataConverter,
    taskQueue: ORCHESTRATOR_TASK_QUEUE,
    workflowBundle: await cachedWorkflowBundle(require.resolve('../workflows')),
    // A restarted orchestrator takes over a dead one's workflows within seconds, not 10 s.
    stickyQueueScheduleToStartTimeout: '3s',
    // Fault points at phase boundaries (tests only: a no-op without MIGRAVI_FAULT_FILE).
    sinks: {
      faults: { point: { fn: (_info, at, migration) => void faultPoint('orchestrator', at, migration), callDuringReplay: false } },
    } satisfies InjectedSinks<FaultSinks>,
  });
  console.log(`orchestrator worker ready: task queue ${ORCHESTRATOR_TASK_QUEUE} on ${values.temporal}`);
  await worker.run();
  await connection.close();
}

main().catch((err: unknown) => {
  console.error(`orchestrator: ${err instanceof Error ? err.stack : String(err)}`);
  process.exit(1);
});
