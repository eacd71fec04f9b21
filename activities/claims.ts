/**
 * A container being migrated is claimed at its source by one migration: a second migration of the
 * same container is refused instead of racing the first (two checkpoints of one process, two
 * restores). A claim is a file created with O_EXCL, so two workers cannot both win it.
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';

function claimFile(workDir: string, container: string): string {
  return path.join(workDir, 'claims', `${container}.json`);
}

async function owner(workDir: string, container: string): Promise<string | undefined> {
  try {
    return (JSON.parse(await readFile(claimFile(workDir, container), 'utf8')) as { migrationId: string }).migrationId;
  } catch {
    return undefined;
  }
}

/** Claims every container for `migrationId` (idempotent for the same migration); throws naming the holder otherwise. */
export async function claimContainers(workDir: string, migrationId: string, containers: string[]): Promise<void> {
  await mkdir(path.join(workDir, 'claims'), { recursive: true });
  const taken: string[] = [];
  try {
    for (const container of containers) {
      try {
        await writeFile(claimFile(workDir, container), JSON.stringify({ migrationId, since: new Date().toISOString() }), { flag: 'wx' });
        taken.push(container);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        const holder = await owner(workDir, container);
        if (holder !== migrationId) throw new Error(`container ${container} is already being migrated by ${holder ?? 'another migration'}`);
      }
    }
  } catch (err) {
    for (const container of taken) await rm(claimFile(workDir, container), { force: true });
    throw err;
  }
}

/** Drops the claims this migration holds; leaves another migration's claims alone. */
export async function releaseClaims(workDir: string, migrationId: string, containers: string[]): Promise<void> {
  for (const container of containers) {
    if ((await owner(workDir, container)) === migrationId) await rm(claimFile(workDir, container), { force: true });
  }
}
