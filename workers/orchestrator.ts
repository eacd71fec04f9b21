/**
 * The orchestrator worker: runs the migration workflows (task queue "migravi"). It holds no cloud
 * credentials and touches no cloud; activities run on the cloud workers.
 *   node dist/workers/orchestrator.js [--temporal 127.0.0.1:7233] [--namespace default]
 */
import { parseArgs } from 'node:util';
import { NativeConnection, Worker } from '@temporalio/worker';
import { ORCHESTRATOR_TASK_QUEUE } from '../lib/plan';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      temporal: { type: 'string', default: process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233' },
      namespace: { type: 'string', default: process.env.TEMPORAL_NAMESPACE ?? 'default' },
    },
  });
  const connection = await NativeConnection.connect({ address: values.temporal });
  const worker = await Worker.create({
    connection,
    namespace: values.namespace,
    taskQueue: ORCHESTRATOR_TASK_QUEUE,
    workflowsPath: require.resolve('../workflows'),
  });
  console.log(`orchestrator worker ready: task queue ${ORCHESTRATOR_TASK_QUEUE} on ${values.temporal}`);
  await worker.run();
  await connection.close();
}

main().catch((err: unknown) => {
  console.error(`orchestrator: ${err instanceof Error ? err.stack : String(err)}`);
  process.exit(1);
});
