/** Steps of the demo scenario shared by the demo script and the end-to-end tests. */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { demoRootfs } from '../lib/paths';
import { startService, waitFor } from '../lib/processes';
import { deployContainer, openLocalCloud } from '../providers/local/local-cloud';
import { registerProcess, type TestbedRecord } from '../providers/local/testbed';
import type { ClientStatus } from './client';
import { clientPort, demoNetwork, KV_PORT, kvContainer } from './demo-vi';

/** Starts the counter service in `cloud` and plugs the client's port into the same network. */
export async function deployDemoVi(record: TestbedRecord, cloud: string, ballastMiB = 0): Promise<void> {
  const target = openLocalCloud(record.options.stateDir, cloud);
  await deployContainer(target, demoNetwork, kvContainer(ballastMiB), demoRootfs);
  await target.controlPlane.ensurePort(clientPort);
}

export interface DemoClient {
  pid: number;
  statusFile: string;
  status(): Promise<ClientStatus>;
  /** Waits until the client has received `count` more replies than it had when called. */
  waitForReplies(count: number, timeoutMs?: number): Promise<ClientStatus>;
}

export async function startDemoClient(record: TestbedRecord, cloud: string): Promise<DemoClient> {
  const dir = record.options.stateDir;
  const statusFile = path.join(dir, 'client-status.json');
  const netns = openLocalCloud(dir, cloud).controlPlane.portNetns(clientPort.name);
  const pid = await startService({
    name: 'demo client',
    argv: ['nsenter', `--net=/run/netns/${netns}`, process.execPath, path.join(__dirname, 'client.js'), kvContainer().ip, String(KV_PORT), statusFile],
    logFile: path.join(dir, 'client.log'),
  });
  await registerProcess(dir, 'demo client', pid);
  const status = async () => JSON.parse(await readFile(statusFile, 'utf8')) as ClientStatus;
  const client: DemoClient = {
    pid,
    statusFile,
    status,
    async waitForReplies(count, timeoutMs = 30_000) {
      let base: number | undefined;
      let last: ClientStatus | undefined;
      await waitFor(`${count} replies to the demo client`, async () => {
        try {
          last = await status();
        } catch {
          return false; // not written yet
        }
        if (last.closed) throw new Error(`demo client stopped: ${last.error ?? 'closed'}`);
        base ??= last.replies;
        return last.replies >= base + count;
      }, timeoutMs);
      return last!;
    },
  };
  return client;
}
