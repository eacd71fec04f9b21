/**
 * The activities one cloud worker runs, bound to that cloud. The workflow calls them through the
 * cloud's task queue, so each runs next to the resources it touches. Every activity is idempotent
 * *and complete* on retry: Temporal may run it again after a worker crash or a lost result, and
 * the retry finishes whatever the earlier attempt left undone (activities/attempt.ts runs each
 * attempt: progress heartbeats, stall detection, superseding, fault points).
 */
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, readlink, realpath, rm, rmdir, symlink, writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { ApplicationFailure, Context } from '@temporalio/activity';
import type {
  ArtifactCheck,
  ArtifactReceipt,
  CheckpointResult,
  CloudListing,
  ContainerSpec,
  DnsRecord,
  Inventory,
  PublicConnection,
  NetworkSpec,
  PageSource,
  PostCopyReport,
  RestoreResult,
  ResumeOutcome,
  TransferEndpoint,
  VolumeReceipt,
} from '../lib/types';
import type { Cloud } from '../providers/provider';
import { runAttempt, type Attempt } from './attempt';
import { stepTimes, waitFor } from '../lib/processes';
import { claimContainers, releaseClaims, type WorkflowLiveness } from './claims';
import { directoryBytes, manifestDigest, sha256File, unpackTar, verifyFiles } from './artifacts';
import { artifactFileName, pushDirectoryAsTar, pushFlatDirectory } from './transfer';
import { compareReceived, probeLink, readReceivedRecord, streamImage } from './image-stream';
import { readHostRates, recordHostRate } from './host-rates';
import type { RateSample } from '../lib/prediction';
import { receiveVolumeRound, sendVolumeRound } from './volumes';
import { closePageForward, connectPageServer, holdPageForward, NoPageServer, openPageForward, releasePageForward } from './page-forward';
import { PageServerClient } from '../providers/runtime/criu-pages';
import { isPortFree } from './ports';
import { faultPoint } from '../lib/faults';
import { availableMemory, freeBytes } from './host-memory';
import { DeployConflict, deployVi, removeVi, withFloatingIp, type DeployOutcome, type RemoveOutcome } from './deploy-vi';
import { parseViSpec, ViSpecError, type ViSpec } from '../lib/vi-spec';

/** A post-copy window whose missing pages do not shrink for this long has stalled. */
const STUCK_WINDOW_MS = 20_000;

export interface ContainerStep {
  migrationId: string;
  container: ContainerSpec;
}

export interface CloudActivityOptions {
  /** Asks Temporal whether a workflow still runs (to expire the claims of closed migrations). */
  workflowIsRunning?: WorkflowLiveness;
}

/** A digest mismatch at the destination: the workflow sends the named files again. */
export interface DigestMismatchDetails {
  kind: 'rootfs' | 'checkpoint';
  badFiles: string[];
  problems: string[];
}

export function createCloudActivities(cloud: Cloud, options: CloudActivityOptions = {}) {
  const { controlPlane, runtime } = cloud;
  const migrationDir = (migrationId: string, container: string) => path.join(cloud.workDir, migrationId, container);
  const checkpointDir = (step: ContainerStep) => path.join(migrationDir(step.migrationId, step.container.name), 'checkpoint');
  const incomingDir = (step: ContainerStep) => path.join(migrationDir(step.migrationId, step.container.name), 'incoming');
  const log = (message: string) => Context.current().log.info(`[${cloud.name}] ${message}`);

  /** An image kept in memory, with the held dump beside it (see heldDumpDir) and that dump's CRIU work files. */
  const imageDirsInMemory = (dir: string) => [dir, `${dir}.eager`, `${dir}.eager.work`];

  /** Drops a container's migration files (an image kept in memory too), and the migration's directory once it is empty. */
  /** A restored copy's lease, armed or moved later; refused (for good) once it ran out. */
  const armLease = async (name: string, until: number) => {
    if (Date.now() >= until) throw ApplicationFailure.nonRetryable(`${name}'s lease in ${cloud.name} ended before it could be restored or renewed`, 'FenceExpired');
    try {
      await runtime.armFence(name, until);
    } catch (err) {
      throw ApplicationFailure.nonRetryable((err as Error).message, 'FenceExpired');
    }
  };
  const removeStepFiles = async (step: { migrationId: string; container: { name: string } }) => {
    const inMemory = await readlink(checkpointDir(step as ContainerStep)).catch(() => undefined);
    if (inMemory) {
      for (const dir of imageDirsInMemory(inMemory)) await rm(dir, { recursive: true, force: true });
      await rmdir(path.dirname(inMemory)).catch(() => undefined); // the migration's, once its last image is gone
    }
    await rm(migrationDir(step.migrationId, step.container.name), { recursive: true, force: true });
    await rmdir(path.join(cloud.workDir, step.migrationId)).catch(() => undefined); // other containers' files may remain
  };

  /** The container as this cloud runs it: its volumes in this cloud's own volume directory. */
  const placedHere = (container: ContainerSpec): ContainerSpec =>
    container.volumes?.length ? { ...container, volumes: container.volumes.map((v, i) => ({ ...v, source: path.join(cloud.volumesDir, container.name, String(i)) })) } : container;

  const readJson = async <T>(file: string): Promise<T | undefined> =>
    existsSync(file) ? (JSON.parse(await readFile(file, 'utf8')) as T) : undefined;

  /**
   * A fresh, empty image directory. A post-copy image is written to memory (tmpfs, behind a link)
   * when the host has room for it twice over: the dump is the freeze's longest step, and at
   * memory speed it no longer waits for a disk.
   */
  /** Whether a post-copy image of this many bytes is kept in memory (the host has room for it twice over). */
  const imageFitsInMemory = async (bytes: number): Promise<boolean> =>
    cloud.memoryDir !== undefined && 2 * bytes <= Math.min(await freeBytes(cloud.memoryDir), await availableMemory());

  /** Returns whether the image goes to memory. */
  const emptyImageDir = async (step: ContainerStep, postCopy: boolean): Promise<boolean> => {
    const imageDir = checkpointDir(step);
    const old = await readlink(imageDir).catch(() => undefined);
    for (const dir of old ? imageDirsInMemory(old) : []) await rm(dir, { recursive: true, force: true });
    await rm(imageDir, { recursive: true, force: true });
    await rm(`${imageDir}.work`, { recursive: true, force: true });
    if (postCopy && cloud.memoryDir) {
      const bytes = await runtime.memoryBytes(step.container.name).catch(() => Infinity);
      if (await imageFitsInMemory(bytes)) {
        const inMemory = path.join(cloud.memoryDir, step.migrationId, step.container.name);
        await rm(inMemory, { recursive: true, force: true });
        await mkdir(inMemory, { recursive: true });
        await mkdir(path.dirname(imageDir), { recursive: true });
        await symlink(inMemory, imageDir);
        return true;
      }
      log(`${step.container.name}: not enough memory to keep its image in ${cloud.memoryDir} (twice its ${Math.round(bytes / 1048576)} MiB): on disk`);
    }
    await mkdir(imageDir, { recursive: true });
    return false;
  };

  /** After a restore, the peers of its connections retransmit now; best effort (they would anyway, later). */
  const nudgePeers = async (name: string, imageDir: string, netnsPath: string): Promise<void> => {
    try {
      const nudged = await runtime.nudgePeers(imageDir, netnsPath);
      if (nudged) log(`${name}: told the peers of ${nudged} connection(s) to retransmit now`);
    } catch (err) {
      log(`${name}: could not nudge its peers (${(err as Error).message}); they retransmit at the end of their back-off`);
    }
  };

  let portAllocations: Promise<unknown> = Promise.resolve();
  /** The page server port of a container's image: the one it was given, else the first free one this cloud's sshd opens to peers. */
  const pageServerPort = (step: ContainerStep, endpoint: TransferEndpoint): Promise<number> => {
    // One allocation at a time (a group's members check out in parallel); a port recorded for
    // another container stays its own even while its server is not running (it may restart).
    const allocation = portAllocations.then(async () => {
      const file = path.join(migrationDir(step.migrationId, step.container.name), 'page-server.port');
      const recorded = await readJson<number>(file);
      if (recorded) return recorded;
      const taken = new Set<number>();
      for (const other of (await readdir(cloud.workDir, { recursive: true }).catch(() => [] as string[])).filter((f) => path.basename(f) === 'page-server.port')) {
        taken.add(Number(await readFile(path.join(cloud.workDir, other), 'utf8').catch(() => '0')));
      }
      for (const port of endpoint.pageServerPorts ?? []) {
        if (!taken.has(port) && (await isPortFree(port))) {
          await writeFile(file, JSON.stringify(port));
          return port;
        }
      }
      throw ApplicationFailure.retryable(`no free page-server port in ${cloud.name} (${(endpoint.pageServerPorts ?? []).join(', ') || 'none offered'})`, 'NoPageServerPort');
    });
    portAllocations = allocation.catch(() => undefined);
    return allocation;
  };

  /** Post-copy, source: where the held dump writes all but the lazy memory (next to the durable image: in memory when it is). */
  const heldDumpDir = async (step: ContainerStep) => `${await realpath(checkpointDir(step))}.eager`;
  /** The size of the image a held dump stands for: its files and the memory still in its processes. */
  const heldImageBytes = async (dir: string) => (await directoryBytes(dir)) + (await runtime.heldDumpBytes(dir)).lazyBytes;

  /**
   * Post-copy, source: sends the held dump (the image without its lazy memory), then serves that
   * memory from here: from the held processes while their durable image is being written, from
   * that image once it is complete.
   */
  const sendForPostCopy = async (step: ContainerStep, endpoint: TransferEndpoint, attempt: Attempt, newDump: boolean): Promise<Pick<CheckpointResult, 'sent' | 'sentDir' | 'postCopy'>> => {
    const name = step.container.name;
    const imageDir = checkpointDir(step);
    const sentDir = await heldDumpDir(step);
    const steps = stepTimes();
    const { lazyBytes, eagerBytes } = await runtime.heldDumpBytes(sentDir);
    const own = controlPlane.transferEndpoint(imageDir);
    const serve = async (port: number) => {
      if ((await runtime.heldDumpState(name, sentDir)) === 'holding') {
        // Fault point "post-copy:writing-image": tests kill the worker while it writes the durable image.
        const onChunk = async () => {
          const action = faultPoint(cloud.name, 'post-copy:writing-image', step.migrationId, name);
          if (action && typeof action === 'object') await new Promise((resolve) => setTimeout(resolve, action.delayMs));
        };
        await runtime.servePagesFromHeld(name, sentDir, imageDir, port, onChunk, (line) => log(`${name}: ${line}`));
      } else if (await runtime.checkpointComplete(imageDir)) {
        // Started, not awaited until it listens: the destination's forward waits for it while the restore runs.
        await runtime.servePages(imageDir, port, { awaitListening: false });
      } else {
        throw ApplicationFailure.nonRetryable(`the memory of ${name} is neither held in ${cloud.name} nor written to its image: it cannot be served`, 'PageSourceGone');
      }
      return port;
    };
    const [sent, port] = await Promise.all([
      streamImage({ dir: sentDir, endpoint, privateKeyPath: cloud.transferKeyPath, attempt, restart: newDump }),
      pageServerPort(step, own).then(serve),
    ]);
    steps.mark('sent, page server up');
    log(`${name}: sent ${eagerBytes} bytes of memory in the freeze; ${lazyBytes} bytes served from 127.0.0.1:${port} after the restore (${steps.summary()})`);
    return { sent, sentDir, postCopy: { endpoint: own, port, lazyBytes, eagerBytes } };
  };

  /**
   * Post-copy, destination: a forward to the source's page server that lets the guard take hold before the first page moves, then the lazy restore.
   */
  const restoreLazily = async (input: ContainerStep & { keepTcp: boolean; postCopy?: PageSource }, imageDir: string, netnsPath: string, attempt: Attempt): Promise<void> => {
    const { postCopy } = input;
    const container = placedHere(input.container);
    const steps = stepTimes();
    let held = 0;
    let holdFailure: unknown;
    const key = `${input.migrationId}/${container.name}`;
    closePageForward(key); // an earlier attempt's
    const localPort = await openPageForward(
      key,
      postCopy!.endpoint,
      cloud.transferKeyPath,
      postCopy!.port,
      async () => {
        // Fault point "restore:page-source": tests drop the daemon's first connection to its page
        // source, which ends the daemon and fails the restore after CRIU unlocked the network.
        await attempt.fault('restore:page-source');
        try {
          held = await runtime.holdLazyMemory(imageDir);
        } catch (err) {
          holdFailure = err;
          throw err;
        }
      },
      (line) => log(`${container.name}: ${line}`),
    );
    steps.mark('forward');
    await runtime.restoreLazy(container, imageDir, netnsPath, input.keepTcp, localPort);
    steps.mark('lazy restore');
    // The daemon connects once it has every process's userfaultfd: from then on the guard holds them.
    try {
      await waitFor('the userfaultfd guard to hold the restored memory', async () => {
        if (holdFailure) throw holdFailure;
        if (held > 0) return true;
        const state = await runtime.lazyMemoryState(container.name, imageDir);
        if (state.daemon === 'completed') return true; // nothing was lazy
        if (state.daemon === 'failed') throw new Error(`CRIU's lazy-pages daemon ended before its first page:\n${await readFile(path.join(`${imageDir}.work`, 'lazy-pages.log'), 'utf8').then((t) => t.split('\n').slice(-8).join('\n')).catch(() => '')}`);
        return false;
      }, 10_000, 2);
    } catch (err) {
      throw ApplicationFailure.nonRetryable(`${container.name}: post-copy restore at ${cloud.name} is not safe: ${(err as Error).message}`, 'PostCopyLost');
    }
    steps.mark('guard holds');
    if (postCopy!.holdUntilWindow) holdPageForward(key);
    log(`${container.name}: lazy restore ${steps.summary()}`);
  };

  const activities = {
    /** Source side: which containers exist, on which networks, with which addresses. */
    async inventory(input: { vi?: string; containers?: string[] }): Promise<Inventory> {
      const specs = await controlPlane.listContainers();
      let names = input.containers ?? [];
      if (input.vi) {
        const members = Object.values(specs).filter((c) => c.vi === input.vi).map((c) => c.name).sort();
        if (!members.length) {
          const vis = [...new Set(Object.values(specs).map((c) => c.vi).filter(Boolean))];
          throw ApplicationFailure.nonRetryable(`no VI "${input.vi}" in ${cloud.name} (it has: ${vis.join(', ') || 'none'})`, 'PreflightFailed');
        }
        const strangers = names.filter((name) => specs[name] && !members.includes(name));
        if (strangers.length) throw ApplicationFailure.nonRetryable(`container(s) ${strangers.join(', ')} in ${cloud.name} are not part of VI "${input.vi}" (${members.join(', ')})`, 'PreflightFailed');
        if (!input.containers) names = members;
      }
      const missing = names.filter((name) => !specs[name]);
      if (missing.length) {
        throw ApplicationFailure.nonRetryable(`container(s) ${missing.join(', ')} not found in ${cloud.name} (it has: ${Object.keys(specs).join(', ') || 'none'})`, 'PreflightFailed');
      }
      const containers = names.map((name) => specs[name]!);
      const networks: NetworkSpec[] = [];
      for (const name of new Set(containers.flatMap((c) => c.interfaces.map((i) => i.network)))) {
        const network = await controlPlane.getNetwork(name);
        if (!network) throw ApplicationFailure.nonRetryable(`network "${name}" is not known to ${cloud.name}`, 'PreflightFailed');
        networks.push(network);
      }
      for (const c of containers) {
        const status = await runtime.status(c.name);
        if (status !== 'running') throw ApplicationFailure.nonRetryable(`container ${c.name} in ${cloud.name} is ${status}, not running`, 'PreflightFailed');
      }
      return { source: controlPlane.endpoint, networks, containers };
    },

    /** What this cloud hosts: networks, and containers with their state read from the runtime. */
    async describeCloud(_input: Record<string, never>): Promise<CloudListing> {
      const specs = Object.values(await controlPlane.listContainers()).sort((a, b) => a.name.localeCompare(b.name));
      const networks = (await controlPlane.listNetworks()).sort((a, b) => a.name.localeCompare(b.name));
      return {
        cloud: cloud.name,
        networks: await Promise.all(networks.map(async (n) => ({ name: n.name, ...(n.vi ? { vi: n.vi } : {}), cidr: n.cidr, stretchedTo: await controlPlane.stretchPeers(n.name) }))),
        containers: await Promise.all(
          specs.map(async (c) => ({
            name: c.name,
            ...(c.vi ? { vi: c.vi } : {}),
            addresses: c.interfaces.map((i) => `${i.network}:${i.ip}`),
            ...(c.floatingIp?.address ? { floatingIp: c.floatingIp.address } : {}),
            status: await runtime.status(c.name),
          })),
        ),
        floatingRange: controlPlane.floatingIpRange(),
      };
    },

    /** Deploys a VI description here (validated at the edge; conflicts refused before anything changes). */
    async deployVi(input: { vi: ViSpec }, attempt: Attempt): Promise<DeployOutcome> {
      try {
        return await deployVi(cloud, parseViSpec(input.vi), (line) => {
          log(line);
          attempt.progress();
        });
      } catch (err) {
        if (err instanceof DeployConflict || err instanceof ViSpecError) throw ApplicationFailure.nonRetryable(err.message, 'DeployConflict');
        throw err;
      }
    },

    /**
     * DNS cloud, before a deploy changes anything: the zone is served here, and none of the names
     * points elsewhere than the VI's own floating IPs (a repeated deploy keeps its records).
     */
    async checkDnsNames(input: { zone: string; names: string[]; allowedAddresses: string[] }): Promise<void> {
      const zones = await controlPlane.dnsZones();
      if (!zones.includes(input.zone)) {
        throw ApplicationFailure.nonRetryable(`dns.zone: ${input.zone} is not served by ${cloud.name}'s DNS (it serves: ${zones.join(', ') || 'nothing'})`, 'DeployConflict');
      }
      const records = await controlPlane.dnsRecords(input.zone);
      const taken = records.filter((r) => input.names.includes(r.name) && r.addresses.some((a) => !input.allowedAddresses.includes(a)));
      if (taken.length) {
        throw ApplicationFailure.nonRetryable(`dns.records: ${taken.map((r) => `${r.name} already points to ${r.addresses.join(', ')}`).join('; ')}`, 'DeployConflict');
      }
    },

    /** DNS cloud: replaces the A records of these names (all or none). */
    async setDnsRecords(input: { zone: string; records: DnsRecord[] }): Promise<void> {
      await controlPlane.setDnsRecords(input.zone, input.records);
      log(`DNS ${input.zone}: ${input.records.map((r) => `${r.name} → ${r.addresses.join(', ')}`).join('; ')}`);
    },

    async deleteDnsRecords(input: { zone: string; names: string[] }): Promise<void> {
      await controlPlane.deleteDnsRecords(input.zone, input.names);
    },

    /** Removes a VI's containers, ports, rules and networks here (its volumes only when asked). */
    async removeVi(input: { name: string; deleteVolumes: boolean }): Promise<RemoveOutcome> {
      try {
        return await removeVi(cloud, input.name, { deleteVolumes: input.deleteVolumes });
      } catch (err) {
        if (err instanceof DeployConflict) throw ApplicationFailure.nonRetryable(err.message, 'NotFound');
        throw err;
      }
    },

    /** Both sides: can this host checkpoint/restore, and would the move collide with anything? */
    async preflight(input: { role: 'source' | 'destination'; inventory: Inventory }): Promise<{ cloud: string; publicIp: string }> {
      const problems = await runtime.preflight();
      if (input.role === 'destination') {
        const specs = await controlPlane.listContainers();
        for (const c of input.inventory.containers) {
          if (specs[c.name]) problems.push(`a container named ${c.name} already exists in ${cloud.name}`);
          const status = await runtime.status(c.name);
          if (status !== 'absent') problems.push(`runtime of ${cloud.name} already has a container ${c.name} (${status})`);
          for (const iface of c.interfaces) {
            for (const used of await controlPlane.addressesInUse(iface.network)) {
              if (used.owner !== c.name && (used.ip === iface.ip || used.mac.toLowerCase() === iface.mac.toLowerCase())) {
                problems.push(`${c.name}'s address ${iface.ip}/${iface.mac} is already used by ${used.owner} on ${iface.network} in ${cloud.name}`);
              }
            }
          }
        }
        const here = await controlPlane.listNetworks();
        for (const n of input.inventory.networks) {
          const existing = here.find((e) => e.name === n.name);
          if (existing && existing.cidr !== n.cidr) problems.push(`network ${n.name} exists in ${cloud.name} with CIDR ${existing.cidr}, not ${n.cidr}`);
          if (existing && existing.vi !== n.vi) problems.push(`network ${n.name} exists in ${cloud.name} for ${existing.vi ? `VI ${existing.vi}` : 'another VI'}`);
          const sameVni = here.find((e) => e.name !== n.name && e.vni === n.vni);
          if (sameVni) problems.push(`network ${sameVni.name} in ${cloud.name} uses VXLAN id ${n.vni}, which ${n.name} needs`);
        }
      }
      if (problems.length) {
        throw ApplicationFailure.nonRetryable(`pre-flight checks failed in ${cloud.name} (${input.role}):\n- ${problems.join('\n- ')}`, 'PreflightFailed');
      }
      return { cloud: cloud.name, publicIp: controlPlane.endpoint.publicIp };
    },

    /**
     * Source: reserve the containers for this migration; a concurrent migration of any of them is
     * refused. Returns the stale claims taken over from migrations that are no longer running.
     */
    async claimContainers(input: { migrationId: string; workflowId: string; containers: string[] }): Promise<string[]> {
      try {
        return await claimContainers(cloud.workDir, input, input.containers, options.workflowIsRunning);
      } catch (err) {
        throw ApplicationFailure.nonRetryable((err as Error).message, 'AlreadyMigrating');
      }
    },

    async releaseClaims(input: { migrationId: string; containers: string[] }): Promise<void> {
      await releaseClaims(cloud.workDir, input.migrationId, input.containers);
    },

    /** Destination: same networks (CIDR, VNI, MTU) as the source. Returns those it created. */
    async replicateNetworks(input: { networks: NetworkSpec[] }): Promise<string[]> {
      const created: string[] = [];
      for (const network of input.networks) {
        if ((await controlPlane.ensureNetwork(network)).created) created.push(network.name);
      }
      return created;
    },

    async removeNetworks(input: { names: string[] }): Promise<void> {
      for (const name of input.names) await controlPlane.removeNetwork(name);
    },

    /**
     * Either side: joins this cloud's copy of each network to the peer's over the WAN. Returns the
     * networks newly stretched, so that a rollback undoes only what this migration did.
     */
    async stretchNetworks(input: { networks: NetworkSpec[]; peerPublicIp: string }): Promise<NetworkSpec[]> {
      const created: NetworkSpec[] = [];
      for (const network of input.networks) {
        if ((await controlPlane.ensureStretch(network, input.peerPublicIp)).created) created.push(network);
      }
      log(`stretched ${input.networks.map((n) => n.name).join(', ')} to ${input.peerPublicIp}`);
      return created;
    },

    /**
     * Source, after the last group moved: a network no port here uses any more (the VI has left)
     * is unstretched and removed, its bridge and tunnel with it. Returns those released; a network
     * still in use here (part of the VI stayed, or anything else is plugged in) keeps its stretch.
     */
    async releaseNetworks(input: { networks: NetworkSpec[]; peerPublicIp: string }): Promise<NetworkSpec[]> {
      const released: NetworkSpec[] = [];
      for (const network of input.networks) {
        const users = await controlPlane.addressesInUse(network.name);
        if (users.length) {
          log(`keeping ${network.name}: still used here by ${[...new Set(users.map((u) => u.owner))].join(', ')}`);
          continue;
        }
        await controlPlane.removeStretch(network, input.peerPublicIp);
        await controlPlane.removeNetwork(network.name);
        released.push(network);
      }
      return released;
    },

    async unstretchNetworks(input: { networks: NetworkSpec[]; peerPublicIp: string }): Promise<void> {
      for (const network of input.networks) await controlPlane.removeStretch(network, input.peerPublicIp);
    },

    /**
     * Destination: the container's port (same IP and MAC), unplugged until the restore plugs it in
     * (never two plugged ports with one address), guarded against closing connections (no RST or
     * FIN leaves it); and a fresh directory for the artifacts, with where to push them.
     */
    async prepareDestination(input: ContainerStep): Promise<TransferEndpoint> {
      await controlPlane.ensurePort(input.container);
      // Its public address here (from this cloud's range), NATed before it arrives.
      if (input.container.floatingIp) await withFloatingIp(cloud, { ...input.container, floatingIp: { network: input.container.floatingIp.network } });
      await controlPlane.setPortEnabled(input.container.name, false);
      await controlPlane.setCloseGuard(input.container.name, true);
      const dir = incomingDir(input);
      await mkdir(dir, { recursive: true });
      return controlPlane.transferEndpoint(dir);
    },

    /**
     * Destination, compensation of prepareDestination: the port, the unpacked bundle and the
     * received files. Refuses to touch a container this cloud hosts (one committed here).
     */
    async discardPrepared(input: ContainerStep): Promise<void> {
      const name = input.container.name;
      if ((await controlPlane.listContainers())[name]) throw ApplicationFailure.nonRetryable(`${name} is a container of ${cloud.name}: not discarding it`, 'Refused');
      await controlPlane.releaseFloatingIp(name);
      await controlPlane.routeRepliesVia(name, [], '');
      await runtime.remove(name);
      await controlPlane.removePort(name);
      for (const v of placedHere(input.container).volumes ?? []) await rm(v.source, { recursive: true, force: true });
      await rmdir(path.join(cloud.volumesDir, name)).catch(() => undefined);
      await removeStepFiles(input);
    },

    /**
     * Source: one round of every volume of the container ("pre" while it runs, "final" inside the
     * freeze: only what changed since), pushed to the destination's incoming directory.
     */
    async sendVolumes(input: ContainerStep & { endpoint: TransferEndpoint; round: 'pre' | 'final' }, attempt: Attempt): Promise<VolumeReceipt[]> {
      const receipts: VolumeReceipt[] = [];
      await mkdir(migrationDir(input.migrationId, input.container.name), { recursive: true });
      for (const [index, volume] of (input.container.volumes ?? []).entries()) {
        const recordFile = path.join(migrationDir(input.migrationId, input.container.name), `volume-${index}.pre.json`);
        receipts.push(await sendVolumeRound({ dir: volume.source, index, round: input.round, recordFile, endpoint: input.endpoint, privateKeyPath: cloud.transferKeyPath, attempt }));
      }
      return receipts;
    },

    /** Destination: applies a round of each volume in this cloud's volume directory, every file re-hashed at rest. */
    async receiveVolumes(input: ContainerStep & { receipts: VolumeReceipt[] }, attempt: Attempt): Promise<ArtifactCheck[]> {
      const volumes = placedHere(input.container).volumes ?? [];
      const checks: ArtifactCheck[] = [];
      for (const receipt of input.receipts) {
        try {
          checks.push({ kind: 'volume', ...(await receiveVolumeRound(receipt, incomingDir(input), volumes[receipt.index]!.source, attempt)) });
        } catch (err) {
          // The same bytes would be unpacked again: the migration rolls back instead.
          throw ApplicationFailure.nonRetryable((err as Error).message, 'VolumeMismatch');
        }
      }
      return checks;
    },

    /**
     * Source, before a group's freeze: what its prediction needs from here — the memory each
     * member's processes hold, this host's earlier dumps, and the link to the destination,
     * measured through the image stream with `probeBytes` of filler.
     */
    async measureForPrediction(input: { migrationId: string; containers: ContainerSpec[]; endpoint: TransferEndpoint; probeBytes: number; postCopy?: boolean }, attempt: Attempt): Promise<{ memberBytes: number[]; dumps: RateSample[]; dumpsInMemory: boolean; link: { bytes: number; ms: number }; cores: number }> {
      const memberBytes = await Promise.all(input.containers.map((c) => runtime.memoryBytes(c.name)));
      const link = await probeLink({ endpoint: input.endpoint, privateKeyPath: cloud.transferKeyPath, signal: attempt.signal, bytes: input.probeBytes });
      // The dumps to come go where checkpoint will put them: their earlier rates there are the ones that tell.
      const dumpsInMemory = !!input.postCopy && (await imageFitsInMemory(Math.max(0, ...memberBytes)));
      const rates = await readHostRates(cloud.stateDir);
      return { memberBytes, dumps: dumpsInMemory ? rates.memoryDumps : rates.dumps, dumpsInMemory, link, cores: availableParallelism() };
    },

    /** Destination, before a group's freeze: how fast this host restored in earlier migrations. */
    async restoreRates(_input: Record<string, never>): Promise<{ restores: RateSample[]; cores: number }> {
      return { restores: (await readHostRates(cloud.stateDir)).restores, cores: availableParallelism() };
    },

    /** Source: the rootfs, as a tar stream (read-only: before the freeze; writable: inside it). */
    async sendRootfs(input: ContainerStep & { endpoint: TransferEndpoint }, attempt: Attempt): Promise<ArtifactReceipt> {
      const dir = path.join(runtime.bundleDir(input.container.name), 'rootfs');
      return pushDirectoryAsTar({ dir, kind: 'rootfs', endpoint: input.endpoint, privateKeyPath: cloud.transferKeyPath, attempt });
    },

    /** Destination: re-hash the rootfs that arrived and unpack it into the container's bundle. */
    async receiveRootfs(input: ContainerStep & { artifact: ArtifactReceipt }, attempt: Attempt): Promise<ArtifactCheck & { unpackMs: number }> {
      const started = Date.now();
      const file = path.join(incomingDir(input), artifactFileName('rootfs'));
      const bundleRootfs = path.join(runtime.bundleDir(input.container.name), 'rootfs');
      const doneMarker = path.join(migrationDir(input.migrationId, input.container.name), 'rootfs.received.json');
      const earlier = await readJson<ArtifactCheck & { unpackMs: number }>(doneMarker);
      if (earlier) return earlier; // an earlier attempt checked and unpacked it (the tar is gone)
      const { sha256, bytes } = await sha256File(file, { signal: attempt.signal, onProgress: () => attempt.progress() });
      if (sha256 !== input.artifact.sha256 || bytes !== input.artifact.bytes) {
        const problem = `received ${bytes} bytes sha256 ${sha256}, sent ${input.artifact.bytes} bytes sha256 ${input.artifact.sha256}`;
        throw ApplicationFailure.create({
          message: `rootfs of ${input.container.name} arrived corrupt: ${problem}`,
          type: 'DigestMismatch',
          nonRetryable: true,
          details: [{ kind: 'rootfs', badFiles: [artifactFileName('rootfs')], problems: [problem] } satisfies DigestMismatchDetails],
        });
      }
      const verifyMs = Date.now() - started;
      await unpackTar(file, bundleRootfs);
      const result = { kind: 'rootfs' as const, files: 1, verifiedBytes: bytes, recomputedSha256: sha256, verifyMs, unpackMs: Date.now() - started - verifyMs };
      await writeFile(doneMarker, JSON.stringify(result));
      await rm(file, { force: true });
      log(`rootfs of ${input.container.name} checked (${bytes} bytes, sha256 ${sha256.slice(0, 12)}…) and unpacked into ${bundleRootfs}`);
      return result;
    },

    /**
     * Source: freeze and dump the container (CRIU, established TCP kept), then unplug its port so
     * the network looks for the MAC elsewhere. From here the process exists only as this image.
     * With an endpoint that takes a stream, the image goes to the destination while CRIU writes
     * it, and the result says what was sent. A retry finishes what an earlier attempt left: a
     * dump that completed (CRIU's log says so) is recorded and its stream resumed; a container
     * left frozen by a dump that died is thawed and dumped again, and streamed again from zero.
     */
    async checkpoint(input: ContainerStep & { keepTcp: boolean; endpoint?: TransferEndpoint; postCopy?: boolean; concurrent?: number }, attempt: Attempt): Promise<CheckpointResult> {
      const name = input.container.name;
      const imageDir = checkpointDir(input);
      const doneMarker = path.join(migrationDir(input.migrationId, name), 'checkpoint.done.json');
      const recorded = await readJson<CheckpointResult>(doneMarker);
      // Post-copy: the complete image stays here (durable) and only its eager part is sent.
      const postCopy = input.postCopy && input.endpoint?.streamPort ? input.endpoint : undefined;
      const stream = input.endpoint?.streamPort && !postCopy ? input.endpoint : undefined;
      let status = await runtime.status(name);
      let durationMs = recorded?.durationMs ?? 0;
      let streaming: Promise<ArtifactReceipt> | undefined;
      let imageBytes = recorded?.imageBytes ?? 0;
      let inMemory = false;
      // Post-copy: an earlier attempt's dump may hold the processes already (its worker died after it started).
      const adopted = !recorded && postCopy !== undefined && status === 'paused' && (await runtime.heldDumpState(name, await heldDumpDir(input))) === 'holding';
      if (adopted) log(`${name} is held by an earlier attempt's dump: going on from there`);
      if (!recorded && !adopted) {
        if (status === 'paused') {
          log(`${name} was left frozen by an earlier dump attempt: thawing it before dumping again`);
          await runtime.resume(name);
          status = await runtime.status(name);
        }
        if (status === 'running') {
          await controlPlane.setCloseGuard(name, true);
          // Everything in the image directory from here on is this dump's (a stream may follow it).
          inMemory = await emptyImageDir(input, postCopy !== undefined);
          const heldDir = postCopy ? await heldDumpDir(input) : undefined;
          const started = Date.now();
          // A cancel does not stop a dump half-way; a stall (hung CRIU) still does.
          const dump = attempt.uninterruptible(async () => {
            // Fault point "checkpoint:during-dump": tests kill the worker while runc and CRIU dump.
            const dumpStarted = attempt.nextChild().then(() => attempt.fault('checkpoint:during-dump'));
            await Promise.all([heldDir ? runtime.checkpointHeld(name, heldDir, input.keepTcp) : runtime.checkpoint(name, imageDir, input.keepTcp), dumpStarted]);
          });
          if (stream) {
            streaming = streamImage({ dir: imageDir, endpoint: stream, privateKeyPath: cloud.transferKeyPath, attempt, restart: true, dumping: dump });
            streaming.catch(() => undefined); // awaited below; a broken stream must not go unhandled meanwhile
          }
          try {
            await dump;
          } catch (err) {
            await streaming?.catch(() => undefined);
            throw err;
          }
          durationMs = Date.now() - started;
          imageBytes = heldDir ? await heldImageBytes(heldDir) : await directoryBytes(imageDir);
          // The host's throughput: the group's members dumped at once, each image in this time.
          await recordHostRate(cloud.stateDir, inMemory ? 'memoryDumps' : 'dumps', { bytes: imageBytes * (input.concurrent ?? 1), ms: durationMs });
          await attempt.fault('checkpoint:after-dump');
        } else if (!(await runtime.checkpointComplete(imageDir))) {
          throw ApplicationFailure.nonRetryable(`container ${name} is ${status} in ${cloud.name} and has no complete checkpoint`, 'CheckpointFailed');
        }
      }
      await controlPlane.setPortEnabled(name, false);
      // A dump an earlier attempt completed:
      if (!recorded && !imageBytes) imageBytes = postCopy ? await heldImageBytes(await heldDumpDir(input)) : await directoryBytes(imageDir);
      const result: CheckpointResult = { imageDir: recorded?.imageDir ?? imageDir, imageBytes, durationMs };
      await writeFile(doneMarker, JSON.stringify(result));
      log(`checkpointed ${name}: ${result.imageBytes} bytes in ${result.durationMs} ms`);
      if (postCopy) return { ...result, ...(await sendForPostCopy(input, postCopy, attempt, !recorded)) };
      if (!stream) return result;
      // The dump was done by an earlier attempt: its stream resumes where the destination's copy ends.
      const sent = await (streaming ?? streamImage({ dir: imageDir, endpoint: stream, privateKeyPath: cloud.transferKeyPath, attempt }));
      return { ...result, sent };
    },

    /**
     * Source: the image's files (resumed on retry); `only` resends files that arrived corrupt.
     * Streamed into the destination's worker, which hashes them as they arrive, where the peer
     * offers it; else pushed over sftp and re-read at the destination.
     */
    async sendCheckpoint(input: ContainerStep & { endpoint: TransferEndpoint; imageDir: string; only?: string[] }, attempt: Attempt): Promise<ArtifactReceipt> {
      const push = input.endpoint.streamPort ? streamImage : pushFlatDirectory;
      return push({ dir: input.imageDir, kind: 'checkpoint', endpoint: input.endpoint, privateKeyPath: cloud.transferKeyPath, attempt, only: input.only });
    },

    /**
     * Post-copy, source, after the destination lost its page source: a new page server for the
     * container's image. One still running serves a dead session (it takes one connection, and
     * the sshd end of a cut link can linger): it is replaced.
     */
    async servePages(input: ContainerStep & { port: number }): Promise<void> {
      const imageDir = checkpointDir(input);
      await runtime.stopServingPages(imageDir);
      // From the durable image: written first from the held processes if it is not yet.
      const settled = await runtime.settleHeldDump(input.container.name, await heldDumpDir(input), imageDir);
      if (!settled && !(await runtime.checkpointComplete(imageDir))) throw ApplicationFailure.nonRetryable(`the image of ${input.container.name} is not complete in ${cloud.name}: its memory cannot be served`, 'PageSourceGone');
      await runtime.servePages(imageDir, input.port);
    },

    /**
     * Destination: check every received byte against the sender's digest, then restore into the
     * prepared port (plugged in now: the source's is unplugged) and lift the close guard. A retry
     * that finds the container running (an earlier attempt restored it) completes the remaining
     * steps and reports the check that attempt recorded — never a check that did not happen.
     */
    async restore(input: ContainerStep & { image: ArtifactReceipt; keepTcp: boolean; postCopy?: PageSource; concurrent?: number; fenceUntil?: number }, attempt: Attempt): Promise<RestoreResult> {
      const { image } = input;
      const container = placedHere(input.container);
      const dir = migrationDir(input.migrationId, container.name);
      const checkRecord = path.join(dir, 'checkpoint.verified.json');
      const restoreRecord = path.join(dir, 'restore.done.json');
      const steps = stepTimes();
      const status = await runtime.status(container.name);
      let check = await readJson<ArtifactCheck>(checkRecord);
      let durationMs = 0;
      let completedEarlierAttempt = false;
      if (status === 'running') {
        if (!check || check.recomputedSha256 !== image.sha256) {
          throw ApplicationFailure.nonRetryable(`${container.name} runs in ${cloud.name} but no check of this image was recorded here`, 'RestoreFailed');
        }
        completedEarlierAttempt = true;
        if (input.fenceUntil) await armLease(container.name, input.fenceUntil);
        durationMs = (await readJson<{ durationMs: number }>(restoreRecord))?.durationMs ?? 0;
        log(`${container.name} was restored by an earlier attempt: completing the step`);
      } else {
        const imageDir = path.join(incomingDir(input), 'checkpoint');
        const started = Date.now();
        if (!image.files || manifestDigest(image.files) !== image.sha256) throw ApplicationFailure.nonRetryable('the image manifest does not match its digest', 'DigestMismatch');
        // A streamed image was hashed by this worker as it arrived: compared, not read again.
        const received = await readReceivedRecord(incomingDir(input));
        const verified = received ? await compareReceived(imageDir, image.files, received) : await verifyFiles(imageDir, image.files, { signal: attempt.signal, onProgress: () => attempt.progress() });
        if (verified.bad.length) {
          // Restoring would read the same bad bytes: the workflow sends these files again.
          throw ApplicationFailure.create({
            message: `checkpoint of ${container.name} arrived corrupt: ${verified.bad.map((b) => `${b.name}: ${b.problem}`).join('; ')}`,
            type: 'DigestMismatch',
            nonRetryable: true,
            details: [{ kind: 'checkpoint', badFiles: verified.bad.map((b) => b.name), problems: verified.bad.map((b) => b.problem) } satisfies DigestMismatchDetails],
          });
        }
        check = { kind: 'checkpoint', files: image.files.length, verifiedBytes: verified.verifiedBytes, recomputedSha256: manifestDigest(image.files), verifyMs: Date.now() - started, method: received ? 'in-flight' : 'at-rest' };
        await writeFile(checkRecord, JSON.stringify(check));
        await attempt.fault('restore:before-criu');
        steps.mark('verify');
        const { netnsPath } = await controlPlane.ensurePort(container);
        steps.mark('port');
        // The port is plugged while CRIU restores: the close guard (on since prepareDestination)
        // keeps the namespace from answering resets until the sockets are back, and a failed
        // attempt (CRIU kills what it restored) from closing them.
        const plugged = controlPlane.setPortEnabled(container.name, true);
        plugged.catch(() => undefined); // awaited below, whatever the restore does
        const restoreStarted = Date.now();
        try {
          // The lease first: from here on a copy may come to life, and it must die at the lease's end unless the group commits.
          if (input.fenceUntil) await armLease(container.name, input.fenceUntil);
          if (input.postCopy) await restoreLazily(input, imageDir, netnsPath, attempt);
          else await runtime.restore(container, imageDir, netnsPath, input.keepTcp);
          if (runtime.fenceFired(container.name)) throw ApplicationFailure.nonRetryable(`${container.name}'s lease ran out while it was restored in ${cloud.name}: the copy was killed`, 'FenceExpired');
        } finally {
          await plugged;
        }
        durationMs = Date.now() - restoreStarted;
        steps.mark('CRIU (port plugged meanwhile)');
        // The peers first: they wait for this (the close guard goes meanwhile); the rest holds no one up.
        await Promise.all([input.keepTcp ? nudgePeers(container.name, imageDir, netnsPath) : undefined, controlPlane.setCloseGuard(container.name, false)]);
        await writeFile(restoreRecord, JSON.stringify({ durationMs, restoredAt: Date.now() }));
        await recordHostRate(cloud.stateDir, 'restores', { bytes: image.bytes * (input.concurrent ?? 1), ms: durationMs });
        await attempt.fault('restore:after-criu');
      }
      // A retry that found it running completes what the earlier attempt may not have done; this one plugged the port already.
      if (completedEarlierAttempt) {
        await controlPlane.setPortEnabled(container.name, true);
        await controlPlane.setCloseGuard(container.name, false);
      }
      const registered = container.floatingIp ? await withFloatingIp(cloud, { ...container, floatingIp: { network: container.floatingIp.network } }) : container;
      await controlPlane.registerContainer(registered);
      steps.mark('peers nudged, guard off, registered');
      log(`restored ${container.name} in ${durationMs} ms (verify ${check.verifyMs} ms; steps: ${steps.summary()})`);
      return { durationMs, check, completedEarlierAttempt, ...(registered.floatingIp?.address ? { floatingIp: registered.floatingIp.address } : {}) };
    },

    /**
     * Post-copy, destination: waits until every lazy page of the restored container is in its
     * memory, as the kernel shows it. If the lazy-pages daemon or its page source is lost, the
     * guard keeps the processes stalled (never on zeros) and this worker copies the missing
     * pages in itself from the source's page server; when that server cannot be reached, it fails
     * with PageSourceLost so the workflow restarts it at the source and calls again.
     */
    async awaitPostCopy(input: ContainerStep & { postCopy: PageSource; recoveries: string[] }, attempt: Attempt): Promise<PostCopyReport> {
      const name = input.container.name;
      releasePageForward(`${input.migrationId}/${name}`); // the group is restored: its memory may come
      const imageDir = path.join(incomingDir(input), 'checkpoint');
      const restoredAt = (await readJson<{ restoredAt?: number }>(path.join(migrationDir(input.migrationId, name), 'restore.done.json')))?.restoredAt ?? Date.now();
      const recoveries = [...input.recoveries];
      let rescuedPages = 0;
      let nothingLeftToFill = false;
      // CRIU's daemon can stop making progress without exiting (seen with processes that fork
      // during the window: it spins): counted every 2 s, no page in for 20 s is a failure.
      const watch = { countedAt: 0, missing: Infinity, progressAt: Date.now() };
      for (;;) {
        attempt.progress();
        const count = Date.now() - watch.countedAt >= 2_000;
        const state = await runtime.lazyMemoryState(name, imageDir, { countMissing: count });
        if (count && state.daemon === 'running') {
          watch.countedAt = Date.now();
          if (state.missingPages < watch.missing) Object.assign(watch, { missing: state.missingPages, progressAt: Date.now() });
          else if (Date.now() - watch.progressAt > STUCK_WINDOW_MS) {
            throw ApplicationFailure.nonRetryable(
              `${name}: CRIU's lazy-pages daemon at ${cloud.name} brought no page in for ${STUCK_WINDOW_MS / 1000} s (${state.missingPages} still missing); its processes may have forked during the window, which CRIU's daemon does not survive`,
              'PostCopyStuck',
            );
          }
        }
        if (!state.running) throw ApplicationFailure.nonRetryable(`${name} stopped at ${cloud.name} before all of its memory had arrived`, 'PostCopyFailed');
        if (state.daemon === 'failed' && !state.guarded) {
          throw ApplicationFailure.nonRetryable(`${name}: CRIU's lazy-pages daemon at ${cloud.name} was lost and no guard holds its memory: ${state.missingPages} pages may read as zeros`, 'PostCopyLost');
        }
        if (state.daemon === 'failed' && state.missingPages > 0 && !nothingLeftToFill) {
          await attempt.fault('post-copy:before-fill');
          let source: Awaited<ReturnType<typeof connectPageServer>>;
          try {
            source = await connectPageServer(input.postCopy.endpoint, cloud.transferKeyPath, input.postCopy.port);
          } catch (err) {
            // No page server there: the workflow starts it again. The source unreachable: this activity is retried as it is.
            const message = `${name}: ${(err as Error).message}; ${state.missingPages} pages wait, the process is stalled safely`;
            if (err instanceof NoPageServer) throw ApplicationFailure.create({ message, type: 'PageSourceLost', nonRetryable: true });
            throw ApplicationFailure.retryable(message, 'PageSourceUnreachable');
          }
          try {
            const filled = await runtime.fillLazyMemory(name, imageDir, new PageServerClient(source.stream), () => attempt.progress());
            rescuedPages += filled.copied;
            nothingLeftToFill = filled.copied === 0; // what is still absent, the process dropped
            recoveries.push(`CRIU's lazy-pages daemon was lost with ${state.missingPages} pages missing; the worker copied ${filled.copied} in from the source's image`);
          } catch (err) {
            throw ApplicationFailure.create({ message: `${name}: filling the missing pages failed (${(err as Error).message})`, type: 'PageSourceLost', nonRetryable: true });
          } finally {
            source.close();
          }
          continue;
        }
        if (state.daemon !== 'running') {
          // Every lazy page is in (CRIU's daemon or this worker copied it); pages still absent were dropped by the process itself.
          await runtime.endLazyRestore(imageDir);
          closePageForward(`${input.migrationId}/${name}`);
          const report: PostCopyReport = { windowMs: Date.now() - restoredAt, lazyBytes: input.postCopy.lazyBytes, rescuedPages, droppedPages: state.missingPages, recoveries };
          log(`${name}: all memory in ${report.windowMs} ms after the restore (${rescuedPages} pages copied by the worker, ${state.missingPages} dropped by the process)`);
          return report;
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    },

    /**
     * Destination: the workflow still hears from this cloud; the restored copy's lease goes on
     * until `until`. Its input names no container step on purpose: it runs beside the step's
     * restore or post-copy window instead of superseding it (attempt.ts).
     */
    async renewFence(input: { migrationId: string; containerName: string; until: number }): Promise<void> {
      try {
        await runtime.renewFence(input.containerName, input.until);
      } catch (err) {
        throw ApplicationFailure.nonRetryable((err as Error).message, 'FenceExpired');
      }
    },

    /** Destination, at the group's commit: the restored copy stays for good (its lease timer stops). */
    async disarmFence(input: ContainerStep): Promise<void> {
      try {
        await runtime.disarmFence(input.container.name);
      } catch (err) {
        throw ApplicationFailure.nonRetryable((err as Error).message, 'FenceExpired');
      }
    },

    /**
     * Destination, fence before the source may resume: no copy of the container runs here. Stops
     * a restore still running on this worker first (attempt.ts), then proves the container gone.
     */
    async discardContainer(input: ContainerStep): Promise<void> {
      const name = input.container.name;
      if ((await controlPlane.listContainers())[name] && (await readJson(path.join(migrationDir(input.migrationId, name), 'restore.done.json'))) === undefined) {
        throw ApplicationFailure.nonRetryable(`${name} is a container of ${cloud.name} that this migration did not restore: not discarding it`, 'Refused');
      }
      await controlPlane.setPortEnabled(name, false).catch(() => undefined); // no port: nothing plugged
      await runtime.remove(name);
      closePageForward(`${input.migrationId}/${name}`);
      await runtime.endLazyRestore(path.join(incomingDir(input), 'checkpoint'));
      await controlPlane.unregisterContainer(name);
      const status = await runtime.status(name);
      if (status !== 'absent') throw ApplicationFailure.retryable(`${name} is still ${status} in ${cloud.name} after removal`, 'FenceFailed');
    },

    /**
     * Source, compensation: the move failed before commit; the container runs here again. What is
     * alive is resumed (a frozen container thawed, a running one left alone); only a container
     * that is gone is restored, and only from an image CRIU completed.
     */
    async resumeAtSource(input: ContainerStep & { keepTcp: boolean }): Promise<ResumeOutcome> {
      const { container } = input;
      const imageDir = checkpointDir(input);
      await runtime.stopServingPages(imageDir);
      // A post-copy dump holding the processes: their image is completed from them and they are
      // let go (thawing them would resume processes whose sockets CRIU left in repair mode).
      const heldDir = await heldDumpDir(input).catch(() => undefined);
      if (heldDir && (await runtime.heldDumpState(container.name, heldDir)) === 'holding' && !(await runtime.settleHeldDump(container.name, heldDir, imageDir))) {
        throw ApplicationFailure.nonRetryable(`${container.name} is held by its dump in ${cloud.name} but its memory could not be written to its image: cannot resume it`, 'ResumeFailed');
      }
      const status = await runtime.status(container.name);
      let outcome: ResumeOutcome = 'was-running';
      if (status === 'paused') {
        await runtime.resume(container.name);
        outcome = 'thawed';
      } else if (status !== 'running') {
        if (!(await runtime.checkpointComplete(imageDir))) {
          throw ApplicationFailure.nonRetryable(`${container.name} is ${status} in ${cloud.name} and its checkpoint is not complete: cannot resume it`, 'ResumeFailed');
        }
        const { netnsPath } = await controlPlane.ensurePort(container);
        await controlPlane.setPortEnabled(container.name, true);
        await runtime.restore(container, imageDir, netnsPath, input.keepTcp);
        if (input.keepTcp) await nudgePeers(container.name, imageDir, netnsPath);
        outcome = 'restored-from-image';
      }
      await controlPlane.setPortEnabled(container.name, true);
      await controlPlane.setCloseGuard(container.name, false);
      await removeStepFiles(input);
      log(`rolled back: ${container.name} runs again in ${cloud.name} (${outcome})`);
      return outcome;
    },

    /** Source, after commit: free the container, its port, its images and its claim. */
    async releaseSource(input: ContainerStep & { keepFloatingIp?: boolean }): Promise<void> {
      const { container } = input;
      // While connections open through it drain, the floating IP stays (NATed to the container, now at the peer).
      if (!input.keepFloatingIp) await controlPlane.releaseFloatingIp(container.name);
      await runtime.stopServingPages(checkpointDir(input));
      // A post-copy dump still holding the processes lets them go: every page is at the destination.
      const heldDir = await heldDumpDir(input).catch(() => undefined);
      if (heldDir) await runtime.settleHeldDump(container.name, heldDir, checkpointDir(input), { imageNeeded: false });
      await runtime.remove(container.name);
      await controlPlane.removePort(container.name);
      await controlPlane.unregisterContainer(container.name);
      // The volumes' data lives at the destination now, checked file by file.
      for (const v of container.volumes ?? []) await rm(v.source, { recursive: true, force: true });
      await rmdir(path.join(cloud.volumesDir, container.name)).catch(() => undefined);
      await removeStepFiles(input);
      await releaseClaims(cloud.workDir, input.migrationId, [container.name]);
    },

    /** Source, inside the freeze: the outside connections open through the container's floating IP. */
    async publicConnections(input: ContainerStep): Promise<PublicConnection[]> {
      return controlPlane.openPublicConnections(input.container.name);
    },

    /** Destination: replies of the source's open public connections leave through the source's edge (empty list: no more). */
    async routeReplies(input: ContainerStep & { connections: PublicConnection[]; peerPublicIp: string }): Promise<void> {
      await controlPlane.routeRepliesVia(input.container.name, input.connections, input.peerPublicIp);
    },

    /** Source, at the end of the drain: the old floating IP goes (and with it the forwarding of what was open through it). */
    async releasePublicAddress(input: ContainerStep): Promise<void> {
      if ((await controlPlane.listContainers())[input.container.name]) throw ApplicationFailure.nonRetryable(`${input.container.name} runs in ${cloud.name}: its floating IP stays`, 'Refused');
      await controlPlane.releaseFloatingIp(input.container.name);
    },

    /** Destination, after commit: drop the received artifacts (the container runs from its bundle). */
    async cleanupReceived(input: ContainerStep): Promise<void> {
      await removeStepFiles(input);
    },
  };

  return withAttempts(cloud.name, cloud.workDir, activities);
}

type ActivityImpl = (input: never, attempt: Attempt) => Promise<unknown>;

/** Runs every activity through runAttempt, keyed by its container step when it has one. */
function withAttempts<T extends Record<string, ActivityImpl>>(cloudName: string, stateDir: string, impls: T): { [K in keyof T]: (input: Parameters<T[K]>[0]) => ReturnType<T[K]> } {
  return Object.fromEntries(
    Object.entries(impls).map(([name, impl]) => [
      name,
      (input: Partial<ContainerStep>) => {
        const step = input.migrationId && input.container ? `${input.migrationId}/${input.container.name}` : undefined;
        return runAttempt({ cloud: cloudName, activity: name, step, migration: input.migrationId, stateDir }, (attempt) =>
          (impl as (input: unknown, attempt: Attempt) => Promise<unknown>)(input, attempt),
        );
      },
    ]),
  ) as never;
}

export type CloudActivities = ReturnType<typeof createCloudActivities>;
