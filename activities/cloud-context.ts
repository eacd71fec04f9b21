/**
 * What every activity of one cloud worker shares: the cloud (its control plane and host runtime),
 * where this worker keeps each migration's files, and the small steps several activities take
 * (an image directory made ready, a lease armed, a page-server port given out).
 */
import { existsSync } from 'node:fs';
import { chmod, mkdir, readdir, readFile, readlink, realpath, rm, rmdir, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ApplicationFailure, Context } from '@temporalio/activity';
import type { ContainerSpec, TransferEndpoint } from '../lib/types';
import type { Cloud } from '../providers/provider';
import type { WorkflowLiveness } from './claims';
import { directoryBytes } from './artifacts';
import { availableMemory, freeBytes } from './host-memory';
import { isPortFree } from './ports';

/** One container's part of one migration: what most activities are called with. */
export interface ContainerStep {
  migrationId: string;
  container: ContainerSpec;
}

export interface CloudActivityOptions {
  /** Asks Temporal whether a workflow still runs (to expire the claims of closed migrations). */
  workflowIsRunning?: WorkflowLiveness;
}

export class CloudContext {
  readonly controlPlane: Cloud['controlPlane'];
  readonly runtime: Cloud['runtime'];
  /** One page-server port given out at a time (a group's members check out in parallel). */
  private portAllocations: Promise<unknown> = Promise.resolve();

  constructor(readonly cloud: Cloud, readonly options: CloudActivityOptions = {}) {
    this.controlPlane = cloud.controlPlane;
    this.runtime = cloud.runtime;
  }

  get name(): string {
    return this.cloud.name;
  }

  log(message: string): void {
    Context.current().log.info(`[${this.cloud.name}] ${message}`);
  }

  migrationDir(migrationId: string, container: string): string {
    return path.join(this.cloud.workDir, migrationId, container);
  }

  checkpointDir(step: ContainerStep): string {
    return path.join(this.migrationDir(step.migrationId, step.container.name), 'checkpoint');
  }

  incomingDir(step: ContainerStep): string {
    return path.join(this.migrationDir(step.migrationId, step.container.name), 'incoming');
  }

  /** A file of the container's migration directory. */
  stepFile(step: ContainerStep, name: string): string {
    return path.join(this.migrationDir(step.migrationId, step.container.name), name);
  }

  async readJson<T>(file: string): Promise<T | undefined> {
    return existsSync(file) ? (JSON.parse(await readFile(file, 'utf8')) as T) : undefined;
  }

  /** The container as this cloud runs it: its volumes in this cloud's own volume directory. */
  placedHere(container: ContainerSpec): ContainerSpec {
    return container.volumes?.length ? { ...container, volumes: container.volumes.map((v, i) => ({ ...v, source: path.join(this.cloud.volumesDir, container.name, String(i)) })) } : container;
  }

  /** Points the container's incoming directory at `inbox` (a peer's, outside the work directory). */
  async linkIncoming(step: ContainerStep, inbox: string): Promise<void> {
    const dir = this.incomingDir(step);
    if ((await readlink(dir).catch(() => undefined)) === inbox) return;
    await rm(dir, { recursive: true, force: true });
    await mkdir(path.dirname(dir), { recursive: true });
    await symlink(inbox, dir);
  }

  /** Drops a container's migration files (an image kept in memory too; what a peer pushed into its inbox), and the migration's directory once it is empty. */
  async removeStepFiles(step: ContainerStep): Promise<void> {
    const inbox = await readlink(this.incomingDir(step)).catch(() => undefined);
    if (inbox) {
      await rm(inbox, { recursive: true, force: true });
      await rmdir(path.dirname(inbox)).catch(() => undefined); // the migration's, once its last container's is gone
    }
    const inMemory = await readlink(this.checkpointDir(step)).catch(() => undefined);
    if (inMemory) {
      for (const dir of imageDirsInMemory(inMemory)) await rm(dir, { recursive: true, force: true });
      await rmdir(path.dirname(inMemory)).catch(() => undefined); // the migration's, once its last image is gone
    }
    await rm(this.migrationDir(step.migrationId, step.container.name), { recursive: true, force: true });
    await rmdir(path.join(this.cloud.workDir, step.migrationId)).catch(() => undefined); // other containers' files may remain
  }

  /** Whether a post-copy image of this many bytes is kept in memory (the host has room for it twice over). */
  async imageFitsInMemory(bytes: number): Promise<boolean> {
    return this.cloud.memoryDir !== undefined && 2 * bytes <= Math.min(await freeBytes(this.cloud.memoryDir), await availableMemory());
  }

  /**
   * A fresh, empty image directory; returns whether it is in memory. A post-copy image is written
   * to memory (tmpfs, behind a link) when the host has room for it twice over: the dump is the
   * freeze's longest step, and at memory speed it no longer waits for a disk.
   */
  async emptyImageDir(step: ContainerStep, postCopy: boolean): Promise<boolean> {
    const imageDir = this.checkpointDir(step);
    const old = await readlink(imageDir).catch(() => undefined);
    for (const dir of old ? imageDirsInMemory(old) : []) await rm(dir, { recursive: true, force: true });
    await rm(imageDir, { recursive: true, force: true });
    await rm(`${imageDir}.work`, { recursive: true, force: true });
    if (postCopy && this.cloud.memoryDir) {
      const bytes = await this.runtime.memoryBytes(step.container.name).catch(() => Infinity);
      if (await this.imageFitsInMemory(bytes)) {
        const inMemory = path.join(this.cloud.memoryDir, step.migrationId, step.container.name);
        await rm(inMemory, { recursive: true, force: true });
        await ownerOnlyDir(this.cloud.memoryDir); // a testbed's teardown may have removed it since the worker started
        await mkdir(inMemory, { recursive: true });
        await mkdir(path.dirname(imageDir), { recursive: true });
        await symlink(inMemory, imageDir);
        return true;
      }
      this.log(`${step.container.name}: not enough memory to keep its image in ${this.cloud.memoryDir} (twice its ${Math.round(bytes / 1048576)} MiB): on disk`);
    }
    await mkdir(imageDir, { recursive: true });
    return false;
  }

  /** Post-copy, source: where the held dump writes all but the lazy memory (next to the durable image: in memory when it is). */
  async heldDumpDir(step: ContainerStep): Promise<string> {
    return `${await realpath(this.checkpointDir(step))}.eager`;
  }

  /** The size of the image a held dump stands for: its files and the memory still in its processes. */
  async heldImageBytes(dir: string): Promise<number> {
    return (await directoryBytes(dir)) + (await this.runtime.heldDumpBytes(dir)).lazyBytes;
  }

  /** After a restore, the peers of its connections retransmit now; best effort (they would anyway, later). */
  async nudgePeers(name: string, imageDir: string): Promise<void> {
    try {
      const nudged = await this.runtime.nudgePeers(name, imageDir);
      if (nudged) this.log(`${name}: told the peers of ${nudged} connection(s) to retransmit now`);
    } catch (err) {
      this.log(`${name}: could not nudge its peers (${(err as Error).message}); they retransmit at the end of their back-off`);
    }
  }

  /** A restored copy's lease, armed or moved later; refused (for good) once it ran out. */
  async armLease(name: string, until: number): Promise<void> {
    if (Date.now() >= until) throw ApplicationFailure.nonRetryable(`${name}'s lease in ${this.cloud.name} ended before it could be restored or renewed`, 'FenceExpired');
    try {
      await this.runtime.armFence(name, until);
    } catch (err) {
      throw ApplicationFailure.nonRetryable((err as Error).message, 'FenceExpired');
    }
  }

  /**
   * The page server port of a container's image: the one it was given, else the first free one
   * this cloud's sshd opens to peers. A port recorded for another container stays its own even
   * while its server is not running (it may restart).
   */
  pageServerPort(step: ContainerStep, endpoint: TransferEndpoint): Promise<number> {
    const allocation = this.portAllocations.then(async () => {
      const file = this.stepFile(step, 'page-server.port');
      const recorded = await this.readJson<number>(file);
      if (recorded) return recorded;
      const taken = new Set<number>();
      for (const other of (await readdir(this.cloud.workDir, { recursive: true }).catch(() => [] as string[])).filter((f) => path.basename(f) === 'page-server.port')) {
        taken.add(Number(await readFile(path.join(this.cloud.workDir, other), 'utf8').catch(() => '0')));
      }
      for (const port of endpoint.pageServerPorts ?? []) {
        if (!taken.has(port) && (await isPortFree(port))) {
          await writeFile(file, JSON.stringify(port));
          return port;
        }
      }
      throw ApplicationFailure.retryable(`no free page-server port in ${this.cloud.name} (${(endpoint.pageServerPorts ?? []).join(', ') || 'none offered'})`, 'NoPageServerPort');
    });
    this.portAllocations = allocation.catch(() => undefined);
    return allocation;
  }
}

/** An image kept in memory, with the held dump beside it (see heldDumpDir) and that dump's CRIU work files. */
/** Creates `dir` if needed and makes it its owner's only (0700): nobody else may list or enter it. */
async function ownerOnlyDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
}

/**
 * Checkpoint images (a process's whole memory: its keys too), root filesystem and volume copies
 * in transit, and post-copy images in memory all live under the cloud's work and memory
 * directories: made root-only before the worker takes any task, so that whatever is created
 * under them, with whatever mode, is out of other users' reach while it exists.
 */
export async function protectWorkDirs(cloud: Cloud): Promise<void> {
  await ownerOnlyDir(cloud.workDir);
  if (cloud.memoryDir) await ownerOnlyDir(cloud.memoryDir);
}

function imageDirsInMemory(dir: string): string[] {
  return [dir, `${dir}.eager`, `${dir}.eager.work`];
}
