/**
 * The copies of a move between the clouds: the destination made ready for them (its port, an
 * incoming directory), the root filesystem, the volumes and the checkpoint image pushed by the
 * source and re-hashed at the destination; and what is dropped when they are no longer needed.
 */
import { mkdir, rm, rmdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ApplicationFailure } from '@temporalio/activity';
import type { ArtifactCheck, ArtifactReceipt, TransferEndpoint, VolumeReceipt } from '../lib/types';
import { sha256File, unpackTar } from './artifacts';
import type { Attempt } from './attempt';
import type { CloudContext, ContainerStep } from './cloud-context';
import { withFloatingIp } from './deploy-vi';
import { streamImage } from './image-stream';
import { artifactFileName, pushDirectoryAsTar, pushFlatDirectory } from './transfer';
import { receiveVolumeRound, sendVolumeRound } from './volumes';

/** A digest mismatch at the destination: the workflow sends the named files again. */
export interface DigestMismatchDetails {
  kind: 'rootfs' | 'checkpoint';
  badFiles: string[];
  problems: string[];
}

/**
 * Destination: the container's port (same IP and MAC), unplugged until the restore plugs it in
 * (never two plugged ports with one address), guarded against closing connections (no RST or
 * FIN leaves it); and a fresh directory for the artifacts, with where to push them.
 */
async function prepareDestination(here: CloudContext, input: ContainerStep & { peer?: string }): Promise<TransferEndpoint> {
  const { controlPlane } = here;
  await controlPlane.ensurePort(input.container);
  // Its public address here (from this cloud's range), NATed before it arrives.
  if (input.container.floatingIp) await withFloatingIp(here.cloud, { ...input.container, floatingIp: { network: input.container.floatingIp.network } });
  await controlPlane.setPortEnabled(input.container.name, false);
  await controlPlane.setCloseGuard(input.container.name, true);
  const dir = here.incomingDir(input);
  // Where the source may write: an inbox of its account's (the incoming directory links there).
  const inbox = input.peer ? await controlPlane.peerInbox(input.peer, path.join(input.migrationId, input.container.name)) : undefined;
  if (inbox) await here.linkIncoming(input, inbox);
  else await mkdir(dir, { recursive: true });
  return controlPlane.transferEndpoint(dir, input.peer);
}

/**
 * Destination, compensation of prepareDestination: the port, the unpacked bundle and the
 * received files. Refuses to touch a container this cloud hosts (one committed here).
 */
async function discardPrepared(here: CloudContext, input: ContainerStep): Promise<void> {
  const { controlPlane } = here;
  const name = input.container.name;
  if ((await controlPlane.listContainers())[name]) throw ApplicationFailure.nonRetryable(`${name} is a container of ${here.name}: not discarding it`, 'Refused');
  await controlPlane.releaseFloatingIp(name);
  await controlPlane.routeRepliesVia(name, [], '');
  await here.runtime.remove(name);
  await controlPlane.removePort(name);
  for (const v of here.placedHere(input.container).volumes ?? []) await rm(v.source, { recursive: true, force: true });
  await rmdir(path.join(here.cloud.volumesDir, name)).catch(() => undefined);
  await here.removeStepFiles(input);
}

/**
 * Source: one round of every volume of the container ("pre" while it runs, "final" inside the
 * freeze: only what changed since), pushed to the destination's incoming directory.
 */
async function sendVolumes(here: CloudContext, input: ContainerStep & { endpoint: TransferEndpoint; round: 'pre' | 'final' }, attempt: Attempt): Promise<VolumeReceipt[]> {
  const receipts: VolumeReceipt[] = [];
  await mkdir(here.migrationDir(input.migrationId, input.container.name), { recursive: true });
  for (const [index, volume] of (input.container.volumes ?? []).entries()) {
    const recordFile = here.stepFile(input, `volume-${index}.pre.json`);
    receipts.push(await sendVolumeRound({ dir: volume.source, index, round: input.round, recordFile, endpoint: input.endpoint, privateKeyPath: here.cloud.transferKeyFor(input.endpoint.cloud), attempt }));
  }
  return receipts;
}

/** Destination: applies a round of each volume in this cloud's volume directory, every file re-hashed at rest. */
async function receiveVolumes(here: CloudContext, input: ContainerStep & { receipts: VolumeReceipt[] }, attempt: Attempt): Promise<ArtifactCheck[]> {
  const volumes = here.placedHere(input.container).volumes ?? [];
  const checks: ArtifactCheck[] = [];
  for (const receipt of input.receipts) {
    try {
      checks.push({ kind: 'volume', ...(await receiveVolumeRound(receipt, here.incomingDir(input), volumes[receipt.index]!.source, attempt)) });
    } catch (err) {
      // The same bytes would be unpacked again: the migration rolls back instead.
      throw ApplicationFailure.nonRetryable((err as Error).message, 'VolumeMismatch');
    }
  }
  return checks;
}

/** Source: the rootfs, as a tar stream (read-only: before the freeze; writable: inside it). */
async function sendRootfs(here: CloudContext, input: ContainerStep & { endpoint: TransferEndpoint }, attempt: Attempt): Promise<ArtifactReceipt> {
  const dir = path.join(here.runtime.bundleDir(input.container.name), 'rootfs');
  return pushDirectoryAsTar({ dir, kind: 'rootfs', endpoint: input.endpoint, privateKeyPath: here.cloud.transferKeyFor(input.endpoint.cloud), attempt });
}

/** Destination: re-hash the rootfs that arrived and unpack it into the container's bundle. */
async function receiveRootfs(here: CloudContext, input: ContainerStep & { artifact: ArtifactReceipt }, attempt: Attempt): Promise<ArtifactCheck & { unpackMs: number }> {
  const started = Date.now();
  const file = path.join(here.incomingDir(input), artifactFileName('rootfs'));
  const bundleRootfs = path.join(here.runtime.bundleDir(input.container.name), 'rootfs');
  const doneMarker = here.stepFile(input, 'rootfs.received.json');
  const earlier = await here.readJson<ArtifactCheck & { unpackMs: number }>(doneMarker);
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
  here.log(`rootfs of ${input.container.name} checked (${bytes} bytes, sha256 ${sha256.slice(0, 12)}…) and unpacked into ${bundleRootfs}`);
  return result;
}

/**
 * Source: the image's files (resumed on retry); `only` resends files that arrived corrupt.
 * Streamed into the destination's worker, which hashes them as they arrive, where the peer
 * offers it; else pushed over sftp and re-read at the destination.
 */
async function sendCheckpoint(here: CloudContext, input: ContainerStep & { endpoint: TransferEndpoint; imageDir: string; only?: string[] }, attempt: Attempt): Promise<ArtifactReceipt> {
  const push = input.endpoint.streamPort ? streamImage : pushFlatDirectory;
  return push({ dir: input.imageDir, kind: 'checkpoint', endpoint: input.endpoint, privateKeyPath: here.cloud.transferKeyFor(input.endpoint.cloud), attempt, only: input.only });
}

/** Destination, after commit: drop the received artifacts (the container runs from its bundle). */
async function cleanupReceived(here: CloudContext, input: ContainerStep): Promise<void> {
  await here.removeStepFiles(input);
}

export const copyActivities = { prepareDestination, discardPrepared, sendVolumes, receiveVolumes, sendRootfs, receiveRootfs, sendCheckpoint, cleanupReceived };
