/**
 * The source's side of the freeze: the checkpoint (CRIU) streamed to the destination while it is
 * written, or, post-copy, its eager part sent and its memory served afterwards from here; and the
 * two ways the source's copy ends — resumed after a rollback, released after the commit.
 */
import { rmdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ApplicationFailure } from '@temporalio/activity';
import { stepTimes } from '../lib/processes';
import { faultPoint } from '../lib/faults';
import type { ArtifactReceipt, CheckpointResult, ResumeOutcome, TransferEndpoint } from '../lib/types';
import { directoryBytes } from './artifacts';
import type { Attempt } from './attempt';
import { releaseClaims } from './claims';
import type { CloudContext, ContainerStep } from './cloud-context';
import { recordHostRate } from './host-rates';
import { streamImage } from './image-stream';

type CheckpointInput = ContainerStep & { keepTcp: boolean; endpoint?: TransferEndpoint; postCopy?: boolean; concurrent?: number };

/**
 * Source: freeze and dump the container (CRIU, established TCP kept), then unplug its port so
 * the network looks for the MAC elsewhere. From here the process exists only as this image.
 * With an endpoint that takes a stream, the image goes to the destination while CRIU writes
 * it, and the result says what was sent. A retry finishes what an earlier attempt left: a
 * dump that completed (CRIU's log says so) is recorded and its stream resumed; a container
 * left frozen by a dump that died is thawed and dumped again, and streamed again from zero.
 */
async function checkpoint(here: CloudContext, input: CheckpointInput, attempt: Attempt): Promise<CheckpointResult> {
  const name = input.container.name;
  const imageDir = here.checkpointDir(input);
  const doneMarker = here.stepFile(input, 'checkpoint.done.json');
  const recorded = await here.readJson<CheckpointResult>(doneMarker);
  // Post-copy: the complete image stays here (durable) and only its eager part is sent.
  const postCopy = input.postCopy && input.endpoint?.streamPort ? input.endpoint : undefined;
  const stream = input.endpoint?.streamPort && !postCopy ? input.endpoint : undefined;
  const dumped = recorded ? undefined : await dumpUnlessDone(here, input, attempt, { postCopy: postCopy !== undefined, stream });
  await here.controlPlane.setPortEnabled(name, false);
  // A dump an earlier attempt completed:
  let imageBytes = recorded?.imageBytes ?? dumped?.imageBytes ?? 0;
  if (!recorded && !imageBytes) imageBytes = postCopy ? await here.heldImageBytes(await here.heldDumpDir(input)) : await directoryBytes(imageDir);
  const result: CheckpointResult = { imageDir: recorded?.imageDir ?? imageDir, imageBytes, durationMs: recorded?.durationMs ?? dumped?.durationMs ?? 0 };
  await writeFile(doneMarker, JSON.stringify(result));
  here.log(`checkpointed ${name}: ${result.imageBytes} bytes in ${result.durationMs} ms`);
  if (postCopy) return { ...result, ...(await sendForPostCopy(here, input, postCopy, attempt, !recorded)) };
  if (!stream) return result;
  // The dump was done by an earlier attempt: its stream resumes where the destination's copy ends.
  const sent = await (dumped?.streaming ?? streamImage({ dir: imageDir, endpoint: stream, privateKeyPath: here.cloud.transferKeyFor(stream.cloud), attempt }));
  return { ...result, sent };
}

/**
 * The dump of a checkpoint no attempt recorded: a held dump an earlier attempt started is
 * adopted (post-copy), a container left frozen by a dump that died is thawed first; one that is
 * neither running nor frozen must have a complete image already.
 */
async function dumpUnlessDone(here: CloudContext, input: CheckpointInput, attempt: Attempt, how: { postCopy: boolean; stream?: TransferEndpoint }): Promise<{ imageBytes: number; durationMs: number; streaming?: Promise<ArtifactReceipt> } | undefined> {
  const { runtime } = here;
  const name = input.container.name;
  const imageDir = here.checkpointDir(input);
  let status = await runtime.status(name);
  // Post-copy: an earlier attempt's dump may hold the processes already (its worker died after it started).
  if (how.postCopy && status === 'paused' && (await runtime.heldDumpState(name, await here.heldDumpDir(input))) === 'holding') {
    here.log(`${name} is held by an earlier attempt's dump: going on from there`);
    return undefined;
  }
  if (status === 'paused') {
    here.log(`${name} was left frozen by an earlier dump attempt: thawing it before dumping again`);
    await runtime.resume(name);
    status = await runtime.status(name);
  }
  if (status === 'running') return dump(here, input, attempt, how);
  if (!(await runtime.checkpointComplete(imageDir))) throw ApplicationFailure.nonRetryable(`container ${name} is ${status} in ${here.name} and has no complete checkpoint`, 'CheckpointFailed');
  return undefined;
}

/** Freezes and dumps the running container, streaming the image meanwhile when asked; records the host's dump rate. */
async function dump(here: CloudContext, input: CheckpointInput, attempt: Attempt, how: { postCopy: boolean; stream?: TransferEndpoint }) {
  const { runtime } = here;
  const name = input.container.name;
  const imageDir = here.checkpointDir(input);
  await here.controlPlane.setCloseGuard(name, true);
  // Everything in the image directory from here on is this dump's (a stream may follow it).
  const inMemory = await here.emptyImageDir(input, how.postCopy);
  const heldDir = how.postCopy ? await here.heldDumpDir(input) : undefined;
  const started = Date.now();
  // A cancel does not stop a dump half-way; a stall (hung CRIU) still does.
  const dumping = attempt.uninterruptible(async () => {
    // Fault point "checkpoint:during-dump": tests kill the worker while runc and CRIU dump.
    const dumpStarted = attempt.nextChild().then(() => attempt.fault('checkpoint:during-dump'));
    await Promise.all([heldDir ? runtime.checkpointHeld(name, heldDir, input.keepTcp) : runtime.checkpoint(name, imageDir, input.keepTcp), dumpStarted]);
  });
  let streaming: Promise<ArtifactReceipt> | undefined;
  if (how.stream) {
    streaming = streamImage({ dir: imageDir, endpoint: how.stream, privateKeyPath: here.cloud.transferKeyFor(how.stream.cloud), attempt, restart: true, dumping });
    streaming.catch(() => undefined); // awaited by the caller; a broken stream must not go unhandled meanwhile
  }
  try {
    await dumping;
  } catch (err) {
    await streaming?.catch(() => undefined);
    throw err;
  }
  const durationMs = Date.now() - started;
  const imageBytes = heldDir ? await here.heldImageBytes(heldDir) : await directoryBytes(imageDir);
  // The host's throughput: the group's members dumped at once, each image in this time.
  await recordHostRate(here.cloud.stateDir, inMemory ? 'memoryDumps' : 'dumps', { bytes: imageBytes * (input.concurrent ?? 1), ms: durationMs });
  await attempt.fault('checkpoint:after-dump');
  return { imageBytes, durationMs, streaming };
}

/**
 * Post-copy, source: sends the held dump (the image without its lazy memory), then serves that
 * memory from here: from the held processes while their durable image is being written, from
 * that image once it is complete.
 */
async function sendForPostCopy(here: CloudContext, step: ContainerStep, endpoint: TransferEndpoint, attempt: Attempt, newDump: boolean): Promise<Pick<CheckpointResult, 'sent' | 'sentDir' | 'postCopy'>> {
  const { runtime } = here;
  const name = step.container.name;
  const imageDir = here.checkpointDir(step);
  const sentDir = await here.heldDumpDir(step);
  const steps = stepTimes();
  const { lazyBytes, eagerBytes } = await runtime.heldDumpBytes(sentDir);
  const own = here.controlPlane.transferEndpoint(imageDir, endpoint.cloud); // the destination logs in as its own account to reach the page servers
  const serve = async (port: number) => {
    if ((await runtime.heldDumpState(name, sentDir)) === 'holding') {
      // Fault point "post-copy:writing-image": tests kill the worker while it writes the durable image.
      const onChunk = async () => {
        const action = faultPoint(here.name, 'post-copy:writing-image', step.migrationId, name);
        if (action && typeof action === 'object') await new Promise((resolve) => setTimeout(resolve, action.delayMs));
      };
      await runtime.servePagesFromHeld(name, sentDir, imageDir, port, onChunk, (line) => here.log(`${name}: ${line}`));
    } else if (await runtime.checkpointComplete(imageDir)) {
      // Started, not awaited until it listens: the destination's forward waits for it while the restore runs.
      await runtime.servePages(imageDir, port, { awaitListening: false });
    } else {
      throw ApplicationFailure.nonRetryable(`the memory of ${name} is neither held in ${here.name} nor written to its image: it cannot be served`, 'PageSourceGone');
    }
    return port;
  };
  const [sent, port] = await Promise.all([
    streamImage({ dir: sentDir, endpoint, privateKeyPath: here.cloud.transferKeyFor(endpoint.cloud), attempt, restart: newDump }),
    here.pageServerPort(step, own).then(serve),
  ]);
  steps.mark('sent, page server up');
  here.log(`${name}: sent ${eagerBytes} bytes of memory in the freeze; ${lazyBytes} bytes served from 127.0.0.1:${port} after the restore (${steps.summary()})`);
  return { sent, sentDir, postCopy: { endpoint: own, port, lazyBytes, eagerBytes } };
}

/**
 * Post-copy, source, after the destination lost its page source: a new page server for the
 * container's image. One still running serves a dead session (it takes one connection, and
 * the sshd end of a cut link can linger): it is replaced.
 */
async function servePages(here: CloudContext, input: ContainerStep & { port: number }): Promise<void> {
  const { runtime } = here;
  const imageDir = here.checkpointDir(input);
  await runtime.stopServingPages(imageDir);
  // From the durable image: written first from the held processes if it is not yet.
  const settled = await runtime.settleHeldDump(input.container.name, await here.heldDumpDir(input), imageDir);
  if (!settled && !(await runtime.checkpointComplete(imageDir))) throw ApplicationFailure.nonRetryable(`the image of ${input.container.name} is not complete in ${here.name}: its memory cannot be served`, 'PageSourceGone');
  await runtime.servePages(imageDir, input.port);
}

/**
 * Source, compensation: the move failed before commit; the container runs here again. What is
 * alive is resumed (a frozen container thawed, a running one left alone); only a container
 * that is gone is restored, and only from an image CRIU completed.
 */
async function resumeAtSource(here: CloudContext, input: ContainerStep & { keepTcp: boolean }): Promise<ResumeOutcome> {
  const { controlPlane, runtime } = here;
  const { container } = input;
  const imageDir = here.checkpointDir(input);
  await runtime.stopServingPages(imageDir);
  // A post-copy dump holding the processes: their image is completed from them and they are
  // let go (thawing them would resume processes whose sockets CRIU left in repair mode).
  const heldDir = await here.heldDumpDir(input).catch(() => undefined);
  if (heldDir && (await runtime.heldDumpState(container.name, heldDir)) === 'holding' && !(await runtime.settleHeldDump(container.name, heldDir, imageDir))) {
    throw ApplicationFailure.nonRetryable(`${container.name} is held by its dump in ${here.name} but its memory could not be written to its image: cannot resume it`, 'ResumeFailed');
  }
  const status = await runtime.status(container.name);
  let outcome: ResumeOutcome = 'was-running';
  if (status === 'paused') {
    await runtime.resume(container.name);
    outcome = 'thawed';
  } else if (status !== 'running') {
    if (!(await runtime.checkpointComplete(imageDir))) {
      throw ApplicationFailure.nonRetryable(`${container.name} is ${status} in ${here.name} and its checkpoint is not complete: cannot resume it`, 'ResumeFailed');
    }
    await controlPlane.ensurePort(container);
    await controlPlane.setPortEnabled(container.name, true);
    await runtime.restore(container, imageDir, input.keepTcp);
    if (input.keepTcp) await here.nudgePeers(container.name, imageDir);
    outcome = 'restored-from-image';
  }
  await controlPlane.setPortEnabled(container.name, true);
  await controlPlane.setCloseGuard(container.name, false);
  await here.removeStepFiles(input);
  here.log(`rolled back: ${container.name} runs again in ${here.name} (${outcome})`);
  return outcome;
}

/** Source, after commit: free the container, its port, its images and its claim. */
async function releaseSource(here: CloudContext, input: ContainerStep & { keepFloatingIp?: boolean }): Promise<void> {
  const { controlPlane, runtime } = here;
  const { container } = input;
  // While connections open through it drain, the floating IP stays (NATed to the container, now at the peer).
  if (!input.keepFloatingIp) await controlPlane.releaseFloatingIp(container.name);
  await runtime.stopServingPages(here.checkpointDir(input));
  // A post-copy dump still holding the processes lets them go: every page is at the destination.
  const heldDir = await here.heldDumpDir(input).catch(() => undefined);
  if (heldDir) await runtime.settleHeldDump(container.name, heldDir, here.checkpointDir(input), { imageNeeded: false });
  await runtime.remove(container.name);
  await controlPlane.removePort(container.name);
  await controlPlane.unregisterContainer(container.name);
  // The volumes' data lives at the destination now, checked file by file.
  for (const v of container.volumes ?? []) await rm(v.source, { recursive: true, force: true });
  await rmdir(path.join(here.cloud.volumesDir, container.name)).catch(() => undefined);
  await here.removeStepFiles(input);
  await releaseClaims(here.cloud.workDir, input.migrationId, [container.name]);
}

export const checkpointActivities = { checkpoint, servePages };
export const sourceActivities = { resumeAtSource, releaseSource };
