/**
 * Post-copy, destination: the window after the restore, while the container runs here and its
 * memory still arrives from the source's page server.
 */
import path from 'node:path';
import { ApplicationFailure } from '@temporalio/activity';
import type { PageSource, PostCopyReport } from '../lib/types';
import { PageServerClient } from '../providers/runtime/criu-pages';
import type { LazyMemoryState } from '../providers/provider';
import type { Attempt } from './attempt';
import type { CloudContext, ContainerStep } from './cloud-context';
import { closePageForward, connectPageServer, NoPageServer, releasePageForward } from './page-forward';

/** A post-copy window whose missing pages do not shrink for this long has stalled. */
const STUCK_WINDOW_MS = 20_000;

type WindowInput = ContainerStep & { postCopy: PageSource; recoveries: string[] };

/**
 * Waits until every lazy page of the restored container is in its memory, as the kernel shows
 * it. If the lazy-pages daemon or its page source is lost, the guard keeps the processes stalled
 * (never on zeros) and this worker copies the missing pages in itself from the source's page
 * server; when that server cannot be reached, it fails with PageSourceLost so the workflow
 * restarts it at the source and calls again.
 */
async function awaitPostCopy(here: CloudContext, input: WindowInput, attempt: Attempt): Promise<PostCopyReport> {
  const { runtime } = here;
  const name = input.container.name;
  releasePageForward(`${input.migrationId}/${name}`); // the group is restored: its memory may come
  const imageDir = path.join(here.incomingDir(input), 'checkpoint');
  const restoredAt = (await here.readJson<{ restoredAt?: number }>(here.stepFile(input, 'restore.done.json')))?.restoredAt ?? Date.now();
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
          `${name}: CRIU's lazy-pages daemon at ${here.name} brought no page in for ${STUCK_WINDOW_MS / 1000} s (${state.missingPages} still missing); its processes may have forked during the window, which CRIU's daemon does not survive`,
          'PostCopyStuck',
        );
      }
    }
    if (!state.running) throw ApplicationFailure.nonRetryable(`${name} stopped at ${here.name} before all of its memory had arrived`, 'PostCopyFailed');
    if (state.daemon === 'failed' && !state.guarded) {
      throw ApplicationFailure.nonRetryable(`${name}: CRIU's lazy-pages daemon at ${here.name} was lost and no guard holds its memory: ${state.missingPages} pages may read as zeros`, 'PostCopyLost');
    }
    if (state.daemon === 'failed' && state.missingPages > 0 && !nothingLeftToFill) {
      const copied = await fillMissingPages(here, input, imageDir, state, attempt);
      rescuedPages += copied;
      nothingLeftToFill = copied === 0; // what is still absent, the process dropped
      recoveries.push(`CRIU's lazy-pages daemon was lost with ${state.missingPages} pages missing; the worker copied ${copied} in from the source's image`);
      continue;
    }
    if (state.daemon !== 'running') {
      // Every lazy page is in (CRIU's daemon or this worker copied it); pages still absent were dropped by the process itself.
      await runtime.endLazyRestore(imageDir);
      closePageForward(`${input.migrationId}/${name}`);
      const report: PostCopyReport = { windowMs: Date.now() - restoredAt, lazyBytes: input.postCopy.lazyBytes, rescuedPages, droppedPages: state.missingPages, recoveries };
      here.log(`${name}: all memory in ${report.windowMs} ms after the restore (${rescuedPages} pages copied by the worker, ${state.missingPages} dropped by the process)`);
      return report;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** The daemon was lost: this worker copies the missing pages in from the source's page server, through the guard; returns how many. */
async function fillMissingPages(here: CloudContext, input: WindowInput, imageDir: string, state: LazyMemoryState, attempt: Attempt): Promise<number> {
  const name = input.container.name;
  await attempt.fault('post-copy:before-fill');
  let source: Awaited<ReturnType<typeof connectPageServer>>;
  try {
    source = await connectPageServer(input.postCopy.endpoint, here.cloud.transferKeyFor(input.postCopy.endpoint.cloud), input.postCopy.port);
  } catch (err) {
    // No page server there: the workflow starts it again. The source unreachable: this activity is retried as it is.
    const message = `${name}: ${(err as Error).message}; ${state.missingPages} pages wait, the process is stalled safely`;
    if (err instanceof NoPageServer) throw ApplicationFailure.create({ message, type: 'PageSourceLost', nonRetryable: true });
    throw ApplicationFailure.retryable(message, 'PageSourceUnreachable');
  }
  try {
    return (await here.runtime.fillLazyMemory(name, imageDir, new PageServerClient(source.stream), () => attempt.progress())).copied;
  } catch (err) {
    throw ApplicationFailure.create({ message: `${name}: filling the missing pages failed (${(err as Error).message})`, type: 'PageSourceLost', nonRetryable: true });
  } finally {
    source.close();
  }
}

export const postCopyActivities = { awaitPostCopy };
