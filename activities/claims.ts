/**
 * A container being migrated is claimed at its source by one migration: a second migration of the
 * same container is refused instead of racing the first (two checkpoints of one process, two
 * restores). A claim is a file created with O_EXCL, so two workers cannot both win it. A claim
 * does not outlive its migration: one whose workflow is closed (completed, failed, terminated,
 * timed out: Temporal says so) is stale and is taken over.
 */
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';

function claimFile(workDir: string, container: string): string {
  return path.join(workDir, 'claims', `${container}.json`);
}

interface Claim {
  migrationId: string;
  /** The holder's workflow, to ask Temporal whether it still runs. */
  workflowId?: string;
  since: string;
}

async function readClaim(workDir: string, container: string): Promise<Claim | undefined> {
  try {
    return JSON.parse(await readFile(claimFile(workDir, container), 'utf8')) as Claim;
  } catch {
    return undefined;
  }
}

async function owner(workDir: string, container: string): Promise<string | undefined> {
  return (await readClaim(workDir, container))?.migrationId;
}

/** Whether a workflow is still running; undefined when that cannot be told (then the claim stands). */
export type WorkflowLiveness = (workflowId: string) => Promise<boolean | undefined>;

/**
 * Claims every container for `migrationId` (idempotent for the same migration); throws naming the
 * holder otherwise. A claim whose holder's workflow is closed is taken over (and said so).
 */
export async function claimContainers(
  workDir: string,
  claimant: { migrationId: string; workflowId: string },
  containers: string[],
  isRunning: WorkflowLiveness = async () => undefined,
): Promise<string[]> {
  await mkdir(path.join(workDir, 'claims'), { recursive: true });
  const taken: string[] = [];
  const takenOver: string[] = [];
  const record = JSON.stringify({ ...claimant, since: new Date().toISOString() } satisfies Claim);
  try {
    for (const container of containers) {
      try {
        await writeFile(claimFile(workDir, container), record, { flag: 'wx' });
        taken.push(container);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        const holder = await readClaim(workDir, container);
        if (holder?.migrationId === claimant.migrationId) continue;
        if (holder?.workflowId && (await isRunning(holder.workflowId)) === false) {
          // The holder is closed (e.g. terminated): its claim is stale. Replace it atomically.
          const tmp = `${claimFile(workDir, container)}.${claimant.migrationId}.tmp`;
          await writeFile(tmp, record);
          await rename(tmp, claimFile(workDir, container));
          // Two claimants taking over at once: the last rename wins, the other sees it and yields.
          if ((await owner(workDir, container)) !== claimant.migrationId) throw new Error(`container ${container} was just claimed by another migration`);
          takenOver.push(`${container} (from ${holder.workflowId}, which is no longer running)`);
          taken.push(container);
          continue;
        }
        throw new Error(`container ${container} is already being migrated by ${holder?.migrationId ?? 'another migration'}`);
      }
    }
  } catch (err) {
    for (const container of taken) await rm(claimFile(workDir, container), { force: true });
    throw err;
  }
  return takenOver;
}

/** Drops the claims this migration holds; leaves another migration's claims alone. */
export async function releaseClaims(workDir: string, migrationId: string, containers: string[]): Promise<void> {
  for (const container of containers) {
    if ((await owner(workDir, container)) === migrationId) await rm(claimFile(workDir, container), { force: true });
  }
}
