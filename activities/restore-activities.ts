/**
 * The destination's side of the freeze: the image checked against the sender's digests and
 * restored into the prepared port, under the copy's lease; the lease renewed and, at the group's
 * commit, stopped; and the fence a rollback needs — the copy proven gone.
 */
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ApplicationFailure } from '@temporalio/activity';
import { stepTimes, waitFor } from '../lib/processes';
import type { ArtifactCheck, ArtifactReceipt, ContainerSpec, PageSource, RestoreResult } from '../lib/types';
import { manifestDigest, verifyFiles } from './artifacts';
import type { Attempt } from './attempt';
import type { CloudContext, ContainerStep } from './cloud-context';
import type { DigestMismatchDetails } from './copy-activities';
import { withFloatingIp } from './deploy-vi';
import { recordHostRate } from './host-rates';
import { compareReceived, readReceivedRecord } from './image-stream';
import { closePageForward, holdPageForward, openPageForward } from './page-forward';

type RestoreInput = ContainerStep & { image: ArtifactReceipt; keepTcp: boolean; postCopy?: PageSource; concurrent?: number; fenceUntil?: number };
type Steps = ReturnType<typeof stepTimes>;

/**
 * Destination: check every received byte against the sender's digest, then restore into the
 * prepared port (plugged in now: the source's is unplugged) and lift the close guard. A retry
 * that finds the container running (an earlier attempt restored it) completes the remaining
 * steps and reports the check that attempt recorded — never a check that did not happen.
 */
async function restore(here: CloudContext, input: RestoreInput, attempt: Attempt): Promise<RestoreResult> {
  const { controlPlane, runtime } = here;
  const container = here.placedHere(input.container);
  const steps = stepTimes();
  const completedEarlierAttempt = (await runtime.status(container.name)) === 'running';
  let check: ArtifactCheck;
  let durationMs: number;
  if (completedEarlierAttempt) {
    ({ check, durationMs } = await adoptEarlierRestore(here, input));
  } else {
    check = await verifyImage(here, input, attempt);
    steps.mark('verify');
    durationMs = await restoreVerified(here, input, container, attempt, steps);
  }
  // A retry that found it running completes what the earlier attempt may not have done; this one plugged the port already.
  if (completedEarlierAttempt) {
    await controlPlane.setPortEnabled(container.name, true);
    await controlPlane.setCloseGuard(container.name, false);
  }
  const registered = container.floatingIp ? await withFloatingIp(here.cloud, { ...container, floatingIp: { network: container.floatingIp.network } }) : container;
  await controlPlane.registerContainer(registered);
  steps.mark('peers nudged, guard off, registered');
  here.log(`restored ${container.name} in ${durationMs} ms (verify ${check.verifyMs} ms; steps: ${steps.summary()})`);
  return { durationMs, check, completedEarlierAttempt, ...(registered.floatingIp?.address ? { floatingIp: registered.floatingIp.address } : {}) };
}

/** The container runs: an earlier attempt restored it, and must have recorded its check of this very image. */
async function adoptEarlierRestore(here: CloudContext, input: RestoreInput): Promise<{ check: ArtifactCheck; durationMs: number }> {
  const name = input.container.name;
  const check = await here.readJson<ArtifactCheck>(here.stepFile(input, 'checkpoint.verified.json'));
  if (!check || check.recomputedSha256 !== input.image.sha256) {
    throw ApplicationFailure.nonRetryable(`${name} runs in ${here.name} but no check of this image was recorded here`, 'RestoreFailed');
  }
  if (input.fenceUntil) await here.armLease(name, input.fenceUntil);
  const durationMs = (await here.readJson<{ durationMs: number }>(here.stepFile(input, 'restore.done.json')))?.durationMs ?? 0;
  here.log(`${name} was restored by an earlier attempt: completing the step`);
  return { check, durationMs };
}

/** Every file of the image against the sender's digests (a streamed image was hashed as it arrived: compared, not read again). */
async function verifyImage(here: CloudContext, input: RestoreInput, attempt: Attempt): Promise<ArtifactCheck> {
  const { image } = input;
  const imageDir = path.join(here.incomingDir(input), 'checkpoint');
  const started = Date.now();
  if (!image.files || manifestDigest(image.files) !== image.sha256) throw ApplicationFailure.nonRetryable('the image manifest does not match its digest', 'DigestMismatch');
  const received = await readReceivedRecord(here.incomingDir(input));
  const verified = received ? await compareReceived(imageDir, image.files, received) : await verifyFiles(imageDir, image.files, { signal: attempt.signal, onProgress: () => attempt.progress() });
  if (verified.bad.length) {
    // Restoring would read the same bad bytes: the workflow sends these files again.
    throw ApplicationFailure.create({
      message: `checkpoint of ${input.container.name} arrived corrupt: ${verified.bad.map((b) => `${b.name}: ${b.problem}`).join('; ')}`,
      type: 'DigestMismatch',
      nonRetryable: true,
      details: [{ kind: 'checkpoint', badFiles: verified.bad.map((b) => b.name), problems: verified.bad.map((b) => b.problem) } satisfies DigestMismatchDetails],
    });
  }
  const check: ArtifactCheck = { kind: 'checkpoint', files: image.files.length, verifiedBytes: verified.verifiedBytes, recomputedSha256: manifestDigest(image.files), verifyMs: Date.now() - started, method: received ? 'in-flight' : 'at-rest' };
  await writeFile(here.stepFile(input, 'checkpoint.verified.json'), JSON.stringify(check));
  await attempt.fault('restore:before-criu');
  return check;
}

/** CRIU restores the checked image into the container's port, under its lease; returns how long CRIU took. */
async function restoreVerified(here: CloudContext, input: RestoreInput, container: ContainerSpec, attempt: Attempt, steps: Steps): Promise<number> {
  const { controlPlane, runtime } = here;
  const imageDir = path.join(here.incomingDir(input), 'checkpoint');
  await controlPlane.ensurePort(container);
  steps.mark('port');
  // The port is plugged while CRIU restores: the close guard (on since prepareDestination)
  // keeps the namespace from answering resets until the sockets are back, and a failed
  // attempt (CRIU kills what it restored) from closing them.
  const plugged = controlPlane.setPortEnabled(container.name, true);
  plugged.catch(() => undefined); // awaited below, whatever the restore does
  const restoreStarted = Date.now();
  try {
    // The lease first: from here on a copy may come to life, and it must die at the lease's end unless the group commits.
    if (input.fenceUntil) await here.armLease(container.name, input.fenceUntil);
    if (input.postCopy) await restoreLazily(here, input, imageDir, attempt);
    else await runtime.restore(container, imageDir, input.keepTcp);
    if (runtime.fenceFired(container.name)) throw ApplicationFailure.nonRetryable(`${container.name}'s lease ran out while it was restored in ${here.name}: the copy was killed`, 'FenceExpired');
  } finally {
    await plugged;
  }
  const durationMs = Date.now() - restoreStarted;
  steps.mark('CRIU (port plugged meanwhile)');
  // The peers first: they wait for this (the close guard goes meanwhile); the rest holds no one up.
  await Promise.all([input.keepTcp ? here.nudgePeers(container.name, imageDir) : undefined, controlPlane.setCloseGuard(container.name, false)]);
  await writeFile(here.stepFile(input, 'restore.done.json'), JSON.stringify({ durationMs, restoredAt: Date.now() }));
  await recordHostRate(here.cloud.stateDir, 'restores', { bytes: input.image.bytes * (input.concurrent ?? 1), ms: durationMs });
  await attempt.fault('restore:after-criu');
  return durationMs;
}

/** Post-copy, destination: a forward to the source's page server that lets the guard take hold before the first page moves, then the lazy restore. */
async function restoreLazily(here: CloudContext, input: RestoreInput, imageDir: string, attempt: Attempt): Promise<void> {
  const { runtime } = here;
  const postCopy = input.postCopy!;
  const container = here.placedHere(input.container);
  const steps = stepTimes();
  let held = 0;
  let holdFailure: unknown;
  const key = `${input.migrationId}/${container.name}`;
  closePageForward(key); // an earlier attempt's
  const takeHold = async () => {
    // Fault point "restore:page-source": tests drop the daemon's first connection to its page
    // source, which ends the daemon and fails the restore after CRIU unlocked the network.
    await attempt.fault('restore:page-source');
    try {
      held = await runtime.holdLazyMemory(imageDir);
    } catch (err) {
      holdFailure = err;
      throw err;
    }
  };
  const localPort = await openPageForward(key, postCopy.endpoint, here.cloud.transferKeyFor(postCopy.endpoint.cloud), postCopy.port, takeHold, (line) => here.log(`${container.name}: ${line}`));
  steps.mark('forward');
  await runtime.restoreLazy(container, imageDir, input.keepTcp, localPort);
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
    throw ApplicationFailure.nonRetryable(`${container.name}: post-copy restore at ${here.name} is not safe: ${(err as Error).message}`, 'PostCopyLost');
  }
  steps.mark('guard holds');
  if (postCopy.holdUntilWindow) holdPageForward(key);
  here.log(`${container.name}: lazy restore ${steps.summary()}`);
}

/**
 * Destination: the workflow still hears from this cloud; the restored copy's lease goes on
 * until `until`. Its input names no container step on purpose: it runs beside the step's
 * restore or post-copy window instead of superseding it (attempt.ts).
 */
async function renewFence(here: CloudContext, input: { migrationId: string; containerName: string; until: number }): Promise<void> {
  try {
    await here.runtime.renewFence(input.containerName, input.until);
  } catch (err) {
    throw ApplicationFailure.nonRetryable((err as Error).message, 'FenceExpired');
  }
}

/** Destination, at the group's commit: the restored copy stays for good (its lease timer stops). */
async function disarmFence(here: CloudContext, input: ContainerStep): Promise<void> {
  try {
    await here.runtime.disarmFence(input.container.name);
  } catch (err) {
    throw ApplicationFailure.nonRetryable((err as Error).message, 'FenceExpired');
  }
}

/**
 * Destination, fence before the source may resume: no copy of the container runs here. Stops
 * a restore still running on this worker first (attempt.ts), then proves the container gone.
 */
async function discardContainer(here: CloudContext, input: ContainerStep): Promise<void> {
  const { controlPlane, runtime } = here;
  const name = input.container.name;
  if ((await controlPlane.listContainers())[name] && (await here.readJson(here.stepFile(input, 'restore.done.json'))) === undefined) {
    throw ApplicationFailure.nonRetryable(`${name} is a container of ${here.name} that this migration did not restore: not discarding it`, 'Refused');
  }
  await controlPlane.setPortEnabled(name, false).catch(() => undefined); // no port: nothing plugged
  await runtime.remove(name);
  closePageForward(`${input.migrationId}/${name}`);
  await runtime.endLazyRestore(path.join(here.incomingDir(input), 'checkpoint'));
  await controlPlane.unregisterContainer(name);
  const status = await runtime.status(name);
  if (status !== 'absent') throw ApplicationFailure.retryable(`${name} is still ${status} in ${here.name} after removal`, 'FenceFailed');
}

export const restoreActivities = { restore, renewFence, disarmFence, discardContainer };
