/**
 * The self-fence of a copy restored at a destination: a lease. Before a restore starts, a small
 * timer process is started beside the container — outside the worker, so the worker's death does
 * not stop it — holding a deadline the workflow gave (and only the workflow extends, through the
 * worker, while it hears from it). At the deadline, unless the group committed (disarmed), the
 * timer kills the restore still running (its process group) and the container, and records that
 * it fired. The workflow, whose migration lost the destination's worker after a restore may have
 * started, can then resume the source once the deadline has passed: the copy is gone whether or
 * not anyone there can say so.
 *
 * Files in the container's bundle directory: fence.until (deadline, ms since the epoch, this
 * host's clock), fence.pid (the timer), fence.disarmed, fence.fired, restore.pgid (runc restore's
 * process group, written by the runtime while it restores).
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { isAlive, waitFor } from '../../lib/processes';

/** The timer: a shell loop, a few hundred KiB, for as long as the lease lasts. */
const TIMER_SCRIPT = `
dir="$1"; root="$2"; name="$3"
while :; do
  [ -e "$dir/fence.disarmed" ] && exit 0
  [ -d "$dir" ] || exit 0
  until=$(cat "$dir/fence.until" 2>/dev/null || echo 0)
  [ "$(date +%s%3N)" -ge "$until" ] && break
  sleep 0.05
done
: > "$dir/fence.fired"
for attempt in 1 2 3 4 5 6 7 8 9 10; do
  [ -s "$dir/restore.pgid" ] && kill -KILL -- "-$(cat "$dir/restore.pgid")" 2>/dev/null
  runc --root "$root" kill "$name" KILL 2>/dev/null
  runc --root "$root" delete --force "$name" 2>/dev/null
  runc --root "$root" state "$name" >/dev/null 2>&1 || exit 0
  sleep 0.1
done
`;

const file = (dir: string, name: string) => path.join(dir, name);

/** The timer's PID while it runs (checked by its command line: a PID can be reused). */
async function timerPid(dir: string): Promise<number | undefined> {
  const pid = Number(await readFile(file(dir, 'fence.pid'), 'utf8').catch(() => ''));
  if (!(pid > 0) || !isAlive(pid)) return undefined;
  const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  return cmdline.split('\0').includes(dir) && cmdline.includes('migravi-fence') ? pid : undefined;
}

/** True once the timer of this bundle killed its copy (the lease ran out before a commit). */
export function fenceFired(dir: string): boolean {
  return existsSync(file(dir, 'fence.fired'));
}

/**
 * Starts the timer before a restore (the restore's own call: never beside a commit of the same
 * step). A timer still running from an earlier attempt of the step has its deadline moved later
 * instead. Refuses once a timer fired: that copy is gone for good.
 */
export async function startFence(dir: string, runcRoot: string, name: string, untilMs: number): Promise<void> {
  if (fenceFired(dir)) throw new Error(`${name}'s lease ran out: its copy here was killed`);
  if (await timerPid(dir)) {
    await moveDeadline(dir, untilMs);
    return;
  }
  // No timer: whatever a finished one left (a renewal that came after a commit) says nothing now.
  for (const f of ['fence.disarmed', 'fence.pid']) await rmQuiet(file(dir, f));
  await writeDeadline(dir, untilMs);
  const timer = spawn('sh', ['-c', TIMER_SCRIPT, 'migravi-fence', dir, runcRoot, name], { detached: true, stdio: 'ignore' });
  timer.unref();
  await writeFile(file(dir, 'fence.pid'), String(timer.pid));
}

/**
 * A renewal: moves the running timer's deadline later (never earlier: a late, older renewal
 * changes nothing). Starts nothing: a renewal that arrives after the commit stopped the timer, or
 * before the restore started it, does nothing. Refuses once the timer fired.
 */
export async function renewFence(dir: string, name: string, untilMs: number): Promise<void> {
  if (fenceFired(dir)) throw new Error(`${name}'s lease ran out: its copy here was killed`);
  if (await timerPid(dir)) await moveDeadline(dir, untilMs);
}

async function moveDeadline(dir: string, untilMs: number): Promise<void> {
  const current = Number(await readFile(file(dir, 'fence.until'), 'utf8').catch(() => '0'));
  if (untilMs > current) await writeDeadline(dir, untilMs);
}

async function writeDeadline(dir: string, untilMs: number): Promise<void> {
  await writeFile(file(dir, 'fence.until.tmp'), String(Math.round(untilMs)));
  await rename(file(dir, 'fence.until.tmp'), file(dir, 'fence.until'));
}

/**
 * The group committed: the timer stops without firing, and this returns only once it has (or
 * throws when it fired first: the copy is gone).
 */
export async function disarmFence(dir: string, name: string): Promise<void> {
  if (!existsSync(dir)) return;
  await writeFile(file(dir, 'fence.disarmed'), '');
  const pid = await timerPid(dir);
  if (pid) await waitFor(`${name}'s fence timer to stop`, () => !isAlive(pid), 5_000, 10);
  if (fenceFired(dir)) throw new Error(`${name}'s lease ran out before the commit: its copy here was killed`);
  for (const f of ['fence.until', 'fence.pid', 'fence.disarmed', 'restore.pgid']) await rmQuiet(file(dir, f));
}

/** Stops the timer without firing (the copy is being removed anyway). */
export async function stopFence(dir: string): Promise<void> {
  const pid = await timerPid(dir);
  if (pid) {
    process.kill(pid, 'SIGKILL');
    await waitFor('the fence timer to stop', () => !isAlive(pid), 5_000, 10);
  }
  for (const f of ['fence.until', 'fence.pid', 'fence.disarmed', 'fence.fired', 'restore.pgid']) await rmQuiet(file(dir, f));
}

async function rmQuiet(p: string): Promise<void> {
  await rm(p, { force: true });
}
