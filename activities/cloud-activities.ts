/**
 * The activities one cloud worker runs, bound to that cloud. The workflow calls them through the
 * cloud's task queue, so each runs next to the resources it touches. Every activity is idempotent:
 * Temporal may run it again after a worker crash or a lost result.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ApplicationFailure, Context } from '@temporalio/activity';
import type {
  ArtifactReceipt,
  CheckpointResult,
  ContainerSpec,
  Inventory,
  NetworkSpec,
  RestoreResult,
  TransferEndpoint,
} from '../lib/types';
import type { Cloud } from '../providers/provider';
import { claimContainers, releaseClaims } from './claims';
import { directoryBytes, manifestDigest, sha256File, unpackTar, verifyFiles } from './artifacts';
import { heartbeatingActivities } from './heartbeat';
import { artifactFileName, pushDirectoryAsTar, pushFlatDirectory } from './transfer';

export interface ContainerStep {
  migrationId: string;
  container: ContainerSpec;
}

export function createCloudActivities(cloud: Cloud) {
  const { controlPlane, runtime } = cloud;
  const migrationDir = (migrationId: string, container: string) => path.join(cloud.workDir, migrationId, container);
  const log = (message: string) => Context.current().log.info(`[${cloud.name}] ${message}`);

  return heartbeatingActivities({
    /** Source side: which containers exist, on which networks, with which addresses. */
    async inventory(input: { containers: string[] }): Promise<Inventory> {
      const specs = await controlPlane.listContainers();
      const missing = input.containers.filter((name) => !specs[name]);
      if (missing.length) {
        throw ApplicationFailure.nonRetryable(`container(s) ${missing.join(', ')} not found in ${cloud.name} (it has: ${Object.keys(specs).join(', ') || 'none'})`, 'PreflightFailed');
      }
      const containers = input.containers.map((name) => specs[name]!);
      const networks: NetworkSpec[] = [];
      for (const name of new Set(containers.map((c) => c.network))) {
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

    /** Both sides: can this host checkpoint/restore, and would the move collide with anything? */
    async preflight(input: { role: 'source' | 'destination'; inventory: Inventory }): Promise<{ cloud: string; publicIp: string }> {
      const problems = await runtime.preflight();
      if (input.role === 'destination') {
        const specs = await controlPlane.listContainers();
        for (const c of input.inventory.containers) {
          if (specs[c.name]) problems.push(`a container named ${c.name} already exists in ${cloud.name}`);
          const status = await runtime.status(c.name);
          if (status !== 'absent') problems.push(`runtime of ${cloud.name} already has a container ${c.name} (${status})`);
          for (const used of await controlPlane.addressesInUse(c.network)) {
            if (used.owner !== c.name && (used.ip === c.ip || used.mac.toLowerCase() === c.mac.toLowerCase())) {
              problems.push(`${c.name}'s address ${c.ip}/${c.mac} is already used by ${used.owner} on ${c.network} in ${cloud.name}`);
            }
          }
        }
        for (const n of input.inventory.networks) {
          const existing = await controlPlane.getNetwork(n.name);
          if (existing && existing.cidr !== n.cidr) problems.push(`network ${n.name} exists in ${cloud.name} with CIDR ${existing.cidr}, not ${n.cidr}`);
        }
      }
      if (problems.length) {
        throw ApplicationFailure.nonRetryable(`pre-flight checks failed in ${cloud.name} (${input.role}):\n- ${problems.join('\n- ')}`, 'PreflightFailed');
      }
      return { cloud: cloud.name, publicIp: controlPlane.endpoint.publicIp };
    },

    /** Source: reserve the containers for this migration; a concurrent migration of any of them is refused. */
    async claimContainers(input: { migrationId: string; containers: string[] }): Promise<void> {
      try {
        await claimContainers(cloud.workDir, input.migrationId, input.containers);
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

    async unstretchNetworks(input: { networks: NetworkSpec[]; peerPublicIp: string }): Promise<void> {
      for (const network of input.networks) await controlPlane.removeStretch(network, input.peerPublicIp);
    },

    /** Destination: a fresh directory for this container's artifacts, and where to push them. */
    async prepareReceive(input: ContainerStep): Promise<TransferEndpoint> {
      const dir = path.join(migrationDir(input.migrationId, input.container.name), 'incoming');
      await mkdir(dir, { recursive: true });
      return controlPlane.transferEndpoint(dir);
    },

    /** Destination: the container's port (same IP and MAC), guarded against sending resets until restore. */
    async preparePort(input: ContainerStep): Promise<void> {
      await controlPlane.ensurePort(input.container);
      await controlPlane.setResetGuard(input.container.name, true);
    },

    async removePort(input: ContainerStep): Promise<void> {
      await controlPlane.removePort(input.container.name);
    },

    /** Source: the read-only rootfs is copied while the container still runs. */
    async sendRootfs(input: ContainerStep & { endpoint: TransferEndpoint }): Promise<ArtifactReceipt> {
      const dir = path.join(runtime.bundleDir(input.container.name), 'rootfs');
      return pushDirectoryAsTar({ dir, kind: 'rootfs', endpoint: input.endpoint, privateKeyPath: cloud.transferKeyPath });
    },

    /** Destination: check the rootfs that arrived and unpack it into the container's bundle, before the freeze. */
    async receiveRootfs(input: ContainerStep & { artifact: ArtifactReceipt }): Promise<{ verifyMs: number; unpackMs: number }> {
      const started = Date.now();
      const file = path.join(migrationDir(input.migrationId, input.container.name), 'incoming', artifactFileName('rootfs'));
      const { sha256, bytes } = await sha256File(file);
      if (sha256 !== input.artifact.sha256 || bytes !== input.artifact.bytes) {
        // Reading again would give the same bytes: fail; nothing is frozen yet, the workflow rolls back.
        throw ApplicationFailure.create({
          message: `rootfs of ${input.container.name} arrived corrupt: ${bytes} bytes sha256 ${sha256}, sent ${input.artifact.bytes} bytes sha256 ${input.artifact.sha256}`,
          type: 'DigestMismatch',
          nonRetryable: true,
        });
      }
      const verifyMs = Date.now() - started;
      await unpackTar(file, path.join(runtime.bundleDir(input.container.name), 'rootfs'));
      await rm(file, { force: true });
      return { verifyMs, unpackMs: Date.now() - started - verifyMs };
    },

    /**
     * Source: freeze and dump the container (CRIU, established TCP kept), then unplug its port so
     * the network looks for the MAC elsewhere. From here the process exists only as this image.
     */
    async checkpoint(input: ContainerStep & { keepTcp: boolean }): Promise<CheckpointResult> {
      const dir = migrationDir(input.migrationId, input.container.name);
      const imageDir = path.join(dir, 'checkpoint');
      const doneMarker = path.join(dir, 'checkpoint.done.json');
      const status = await runtime.status(input.container.name);
      if (status !== 'running' && existsSync(doneMarker)) {
        return JSON.parse(await readFile(doneMarker, 'utf8')) as CheckpointResult; // a retry after success
      }
      if (status !== 'running') {
        throw ApplicationFailure.nonRetryable(`container ${input.container.name} is ${status} in ${cloud.name} and has no checkpoint`, 'CheckpointFailed');
      }
      await controlPlane.setResetGuard(input.container.name, true);
      const started = Date.now();
      await runtime.checkpoint(input.container.name, imageDir, input.keepTcp);
      const durationMs = Date.now() - started;
      await controlPlane.setPortEnabled(input.container.name, false);
      const result: CheckpointResult = { imageDir, imageBytes: await directoryBytes(imageDir), durationMs };
      await writeFile(doneMarker, JSON.stringify(result));
      log(`checkpointed ${input.container.name}: ${result.imageBytes} bytes in ${durationMs} ms`);
      return result;
    },

    async sendCheckpoint(input: ContainerStep & { endpoint: TransferEndpoint; imageDir: string }): Promise<ArtifactReceipt> {
      return pushFlatDirectory({ dir: input.imageDir, kind: 'checkpoint', endpoint: input.endpoint, privateKeyPath: cloud.transferKeyPath });
    },

    /**
     * Destination: check every received byte against the sender's digest, unpack, and restore into
     * the prepared port. Then lift the reset guard: the socket exists again.
     */
    async restore(input: ContainerStep & { image: ArtifactReceipt; keepTcp: boolean }): Promise<RestoreResult> {
      const { container, image } = input;
      if ((await runtime.status(container.name)) === 'running') {
        return { durationMs: 0, verifyMs: 0, verifiedBytes: image.bytes }; // a retry after success
      }
      const imageDir = path.join(migrationDir(input.migrationId, container.name), 'incoming', 'checkpoint');
      const verifyStarted = Date.now();
      let verifiedBytes: number;
      try {
        if (!image.files || manifestDigest(image.files) !== image.sha256) throw new Error('the manifest does not match its digest');
        verifiedBytes = await verifyFiles(imageDir, image.files);
      } catch (err) {
        // Restoring again would read the same bytes: fail, and the workflow rolls back to the
        // source, which still holds the image.
        throw ApplicationFailure.create({ message: `checkpoint of ${container.name} arrived corrupt: ${(err as Error).message}`, type: 'DigestMismatch', nonRetryable: true });
      }
      const verifyMs = Date.now() - verifyStarted;
      const { netnsPath } = await controlPlane.ensurePort(container);
      const started = Date.now();
      await runtime.restore(container, imageDir, netnsPath, input.keepTcp);
      const durationMs = Date.now() - started;
      await controlPlane.setResetGuard(container.name, false);
      await controlPlane.registerContainer(container);
      log(`restored ${container.name} in ${durationMs} ms (verify ${verifyMs} ms)`);
      return { durationMs, verifyMs, verifiedBytes };
    },

    /** Destination, compensation: make sure no copy of the container runs here (never two copies). */
    async discardContainer(input: ContainerStep): Promise<void> {
      await runtime.remove(input.container.name);
      await controlPlane.unregisterContainer(input.container.name);
    },

    /** Source, compensation: the move failed before commit; resume the container where it was. */
    async restoreAtSource(input: ContainerStep & { keepTcp: boolean }): Promise<void> {
      const { container } = input;
      if ((await runtime.status(container.name)) !== 'running') {
        const imageDir = path.join(migrationDir(input.migrationId, container.name), 'checkpoint');
        const { netnsPath } = await controlPlane.ensurePort(container);
        await controlPlane.setPortEnabled(container.name, true);
        await runtime.restore(container, imageDir, netnsPath, input.keepTcp);
      }
      await controlPlane.setPortEnabled(container.name, true);
      await controlPlane.setResetGuard(container.name, false);
      log(`rolled back: ${container.name} runs again in ${cloud.name}`);
    },

    /** Source, after commit: free the container, its port, its images and its claim. */
    async releaseSource(input: ContainerStep): Promise<void> {
      const { container } = input;
      await runtime.remove(container.name);
      await controlPlane.removePort(container.name);
      await controlPlane.unregisterContainer(container.name);
      await rm(migrationDir(input.migrationId, container.name), { recursive: true, force: true });
      await releaseClaims(cloud.workDir, input.migrationId, [container.name]);
    },

    /** Destination, after commit: drop the received artifacts (the container runs from its bundle). */
    async cleanupReceived(input: ContainerStep): Promise<void> {
      await rm(migrationDir(input.migrationId, input.container.name), { recursive: true, force: true });
    },
  });
}

export type CloudActivities = ReturnType<typeof createCloudActivities>;
