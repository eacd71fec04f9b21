/**
 * A cloud worker: runs the activities of one cloud (task queue "migravi.<cloud>"), next to that
 * cloud's containers. In the embedded testbed it runs inside the cloud's edge namespace and
 * reaches Temporal across the WAN, as an agent in a real cloud would.
 *   node dist/workers/cloud-worker.js --config CLOUD.json [--temporal 203.0.113.1:7233] [--metrics 0.0.0.0:9464]
 * The configuration names the cloud's provider (`"provider": "local"`): the worker opens the
 * cloud through providers/registry.ts and knows no provider itself.
 */
import { parseArgs } from 'node:util';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection, Worker } from '@temporalio/worker';
import { createCloudActivities } from '../activities/cloud-activities';
import { protectWorkDirs } from '../activities/cloud-context';
import { startImageReceiver } from '../activities/image-stream';
import { cloudTaskQueue } from '../lib/plan';
import { openCloud } from '../providers/registry';
import { loadDataConverter, tlsFilesFrom } from '../lib/temporal-access';
import { loadTlsConfig } from '../lib/temporal-tls';
import { installTelemetry } from './telemetry';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      config: { type: 'string' },
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
  if (!values.config) throw new Error('usage: cloud-worker --config CLOUD.json [--temporal HOST:PORT] [--namespace NAME]');
  const cloud = await openCloud(values.config);
  await protectWorkDirs(cloud);
  const taskQueue = cloudTaskQueue(cloud.name);
  // Every payload it sends is sealed with the ring's current key (lib/payload-codec.ts).
  const dataConverter = await loadDataConverter({ ...(values['payload-keys'] ? { payloadKeys: values['payload-keys'] } : {}) });
  const tlsFiles = tlsFilesFrom({ ca: values['temporal-tls-ca'], cert: values['temporal-tls-cert'], key: values['temporal-tls-key'], serverName: values['temporal-tls-server-name'] });
  const tls = tlsFiles ? await loadTlsConfig(tlsFiles) : undefined;
  const connection = await NativeConnection.connect({ address: values.temporal, ...(tls ? { tls } : {}) });
  // A client of its own, to tell whether the migration holding a claim still runs (stale claims expire).
  const clientConnection = await Connection.connect({ address: values.temporal, ...(tls ? { tls } : {}) });
  const client = new Client({ connection: clientConnection, namespace: values.namespace, dataConverter });
  const workflowIsRunning = async (workflowId: string) => {
    try {
      return (await client.workflow.getHandle(workflowId).describe()).status.name === 'RUNNING';
    } catch (err) {
      return (err as Error).name === 'WorkflowNotFoundError' ? false : undefined;
    }
  };
  // Images streamed by peers arrive here (through this cloud's sshd), hashed as they arrive.
  const { streamPort } = cloud.controlPlane.transferEndpoint(cloud.workDir);
  const receiver = streamPort ? await startImageReceiver({ root: cloud.workDir, port: streamPort, log: (line) => console.log(`[${cloud.name}] ${line}`) }) : undefined;
  const worker = await Worker.create({
    connection,
    namespace: values.namespace,
    dataConverter,
    taskQueue,
    activities: createCloudActivities(cloud, { workflowIsRunning }),
    // A group's members are checkpointed and restored at once (its blackout is the slowest
    // member's), and a post-copy window holds one activity per member until its memory is in:
    // room for a 16-container group. Transfers are limited by the plan (parallelTransfers).
    maxConcurrentActivityTaskExecutions: 20,
    // Heartbeats carry transfer progress: let the server (and so operators) see it every second.
    maxHeartbeatThrottleInterval: '1s',
  });
  console.log(`cloud worker ready: ${cloud.name} (${cloud.controlPlane.endpoint.publicIp}), task queue ${taskQueue} on ${values.temporal}`);
  await worker.run();
  receiver?.close();
  await connection.close();
  await clientConnection.close();
}

main().catch((err: unknown) => {
  console.error(`cloud-worker: ${err instanceof Error ? err.stack : String(err)}`);
  process.exit(1);
});
