/** Steps of the demo scenario shared by the demo script and the end-to-end tests. */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { demoRootfs, nginxRootfs } from '../lib/paths';
import { startService, waitFor } from '../lib/processes';
import { deployContainer, openLocalCloud } from '../providers/local/local-cloud';
import { registerProcess, type TestbedRecord } from '../providers/local/testbed';
import type { ClientStatus } from './client';
import { clientPort, demoNetwork, KV_PORT, kvContainer, WEB_PORT, webContainer } from './demo-vi';

/** Starts the counter service (and the web server, when asked) in `cloud` and plugs the client's port into the same network. */
export async function deployDemoVi(record: TestbedRecord, cloud: string, ballastMiB = 0, opts: { web?: boolean } = {}): Promise<void> {
  const target = openLocalCloud(record.options.stateDir, cloud);
  await deployContainer(target, demoNetwork, kvContainer(ballastMiB), demoRootfs);
  if (opts.web) await deployContainer(target, demoNetwork, webContainer, nginxRootfs);
  await target.controlPlane.ensurePort(clientPort);
}

export interface DemoClient {
  pid: number;
  statusFile: string;
  status(): Promise<ClientStatus>;
  /** Waits until the client has received `count` more replies than it had when called. */
  waitForReplies(count: number, timeoutMs?: number): Promise<ClientStatus>;
}

/** What a client keeps its one connection to: the counter service by default. */
export interface ClientTarget {
  name: string;
  ip: string;
  port: number;
  protocol: 'kv' | 'http';
}

export const kvTarget: ClientTarget = { name: 'client', ip: kvContainer().ip, port: KV_PORT, protocol: 'kv' };
export const webTarget: ClientTarget = { name: 'web-client', ip: webContainer.ip, port: WEB_PORT, protocol: 'http' };

/** Starts a client in the client's port (in `cloud`), holding one connection to `target`. */
export async function startDemoClient(record: TestbedRecord, cloud: string, target: ClientTarget = kvTarget): Promise<DemoClient> {
  const dir = record.options.stateDir;
  const statusFile = path.join(dir, `${target.name}-status.json`);
  const netns = openLocalCloud(dir, cloud).controlPlane.portNetns(clientPort.name);
  const pid = await startService({
    name: `demo ${target.name}`,
    argv: ['nsenter', `--net=/run/netns/${netns}`, process.execPath, path.join(__dirname, 'client.js'), target.ip, String(target.port), statusFile, target.protocol],
    logFile: path.join(dir, `${target.name}.log`),
  });
  await registerProcess(dir, `demo ${target.name}`, pid);
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
