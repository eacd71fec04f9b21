/**
 * Stage "post-copy", one member: the group runs at the destination while its memory follows from
 * the source. A lost page source (the source's worker or page server died, the link was cut) is
 * started again at the source — its image is complete there — and the destination fills in what
 * is missing; the process meanwhile stalls on a missing page, never reads a wrong one.
 */
import type { PageSource, PostCopyReport } from '../../lib/types';
import { on } from './activity-stubs';
import { countBytes, note, type Member, type MigrationContext } from './context';
import { describe, failureType } from './failures';

/** How many times a post-copy window restarts a lost page source before the group is rolled back. */
const MAX_PAGE_SOURCE_RESTARTS = 5;

export async function awaitMemory(ctx: MigrationContext, m: Member, source: PageSource): Promise<PostCopyReport> {
  const { plan, options } = ctx;
  const name = m.step.container.name;
  const recoveries: string[] = [];
  for (let lost = 0; ; lost++) {
    try {
      const report = await on(plan.destination, { scheduleToCloseMs: options.transferTimeoutSeconds * 1000 }).awaitPostCopy({ ...m.step, postCopy: source, recoveries });
      // The lazy memory crossed the link once (pages the worker filled in replaced the daemon's).
      countBytes(ctx, name, source.lazyBytes);
      note(ctx, `${name}: all of its memory (${Math.round(source.lazyBytes / 1048576)} MiB after the restore) arrived in ${report.windowMs} ms${report.rescuedPages ? `, ${report.rescuedPages} pages copied in after a lost page source` : ''}`);
      return report;
    } catch (err) {
      if (failureType(err) !== 'PageSourceLost' || lost >= MAX_PAGE_SOURCE_RESTARTS) throw err;
      recoveries.push(describe(err));
      note(ctx, `${name}: ${describe(err)}; starting its page server at ${plan.source} again`);
      await on(plan.source, { scheduleToCloseMs: options.rollbackTimeoutSeconds * 1000 }).servePages({ ...m.step, port: source.port });
    }
  }
}
