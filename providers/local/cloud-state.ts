import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { ContainerSpec, InterfaceSpec, NetworkSpec, PublicConnection } from '../../lib/types';

/** What runs where in one embedded cloud, kept on disk so a restarted worker reads it back. */
export interface CloudState {
  networks: Record<string, NetworkSpec>;
  /** Peer public IPs each network is stretched to. */
  stretches: Record<string, string[]>;
  /** Ports by container name: the container's place on its network. */
  ports: Record<string, { interfaces: InterfaceSpec[]; netns: string; /** Digest of what it was built from (absent: rebuild it). */ shape?: string }>;
  /** Containers this cloud hosts (deployed or restored here). */
  containers: Record<string, ContainerSpec>;
  /** Floating IPs given out, by address: NATed at the edge to a container's private address. */
  floatingIps: Record<string, { container: string; privateIp: string }>;
  /** Drains: by container, connections whose replies leave through a peer's edge. */
  drains: Record<string, { peer: string; connections: PublicConnection[] }>;
}

const empty = (): CloudState => ({ networks: {}, stretches: {}, ports: {}, containers: {}, floatingIps: {}, drains: {} });

/**
 * A JSON file updated atomically (write + rename) under an in-process lock, so concurrent
 * activities of one worker never lose each other's updates.
 */
export class CloudStateStore {
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly file: string) {}

  async read(): Promise<CloudState> {
    try {
      return { ...empty(), ...(JSON.parse(await readFile(this.file, 'utf8')) as Partial<CloudState>) };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return empty();
      throw err;
    }
  }

  update<T>(change: (state: CloudState) => T): Promise<T> {
    const next = this.queue.then(async () => {
      const state = await this.read();
      const result = change(state);
      await mkdir(path.dirname(this.file), { recursive: true });
      const tmp = `${this.file}.${process.pid}.tmp`;
      await writeFile(tmp, JSON.stringify(state, null, 2));
      await rename(tmp, this.file);
      return result;
    });
    this.queue = next.catch(() => undefined);
    return next;
  }
}
