/**
 * CRIU and processes that do not run as root (a database server, a web server's workers). On hosts
 * without CAP_SYS_RESOURCE in the bounding set, CRIU cannot read their resource limits and every
 * dump fails; setup then gives CRIU a shim (scripts/criu-prlimit-shim.c). Checked here on a real
 * process of user nobody, dumped and restored by the CRIU the runtime uses: it must come back with
 * its user and with exactly the limits it had (what the shim read is what CRIU restored).
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { run } from '../../lib/exec';
import { criuPath, depsDir } from '../../lib/paths';
import { isAlive, stopPid, waitFor } from '../../lib/processes';

const NOBODY = 65534;

/** Whether this host's capability bounding set has CAP_SYS_RESOURCE (bit 24). */
function hasCapSysResource(): boolean {
  const line = readFileSync('/proc/self/status', 'utf8').split('\n').find((l) => l.startsWith('CapBnd:'))!;
  return ((BigInt(`0x${line.split(/\s+/)[1]}`) >> 24n) & 1n) === 1n;
}

/** sid's CRIU run without the shim: the tool as it comes. */
function rawCriu(): string[] {
  const root = path.join(depsDir, 'criu', readdirSync(path.join(depsDir, 'criu')).filter((d) => d.startsWith('4.')).sort().pop()!, 'root');
  const lib = path.join(root, 'usr', 'lib', 'x86_64-linux-gnu');
  return [path.join(lib, 'ld-linux-x86-64.so.2'), '--library-path', lib, path.join(root, 'usr', 'sbin', 'criu')];
}

function uidOf(pid: number): number {
  return Number(readFileSync(`/proc/${pid}/status`, 'utf8').match(/^Uid:\s+(\d+)/m)![1]);
}

describe('CRIU with a process that is not root', function () {
  this.timeout(60_000);
  let dir: string;
  let child: ChildProcess | undefined;
  let restoredPid: number | undefined;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'migravi-nonroot-'));
    // Its own session (CRIU dumps a session leader with --shell-job), stdio on /dev/null, user nobody.
    child = spawn('setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', 'sleep', '600'], { detached: true, stdio: 'ignore' });
    await waitFor('the process to run as nobody', () => child?.pid !== undefined && isAlive(child.pid) && uidOf(child.pid) === NOBODY, 5_000);
  });

  after(async () => {
    if (child?.pid && isAlive(child.pid)) await stopPid(child.pid);
    if (restoredPid && isAlive(restoredPid)) await stopPid(restoredPid);
    await rm(dir, { recursive: true, force: true });
  });

  it('cannot be dumped by CRIU as it comes on this host, and the failed dump harms nothing', async function () {
    if (hasCapSysResource()) this.skip(); // a host with the capability needs no shim
    const [loader, ...args] = rawCriu();
    const result = await run(loader!, [...args, 'dump', '-t', String(child!.pid), '-D', dir, '--shell-job', '-o', 'raw-dump.log'], { allowFailure: true });
    assert.notEqual(result.exitCode, 0, 'the raw CRIU dumped a non-root process: the shim is no longer needed here');
    assert.match(await readFile(path.join(dir, 'raw-dump.log'), 'utf8'), /Can't get rlimit \d+: Operation not permitted/);
    assert.ok(isAlive(child!.pid!), 'the failed dump killed the process');
  });

  it('is dumped and restored by the runtime\'s CRIU, with its user and exactly its limits', async () => {
    const pid = child!.pid!;
    const limitsBefore = readFileSync(`/proc/${pid}/limits`, 'utf8');
    const exited = new Promise<void>((resolve) => child!.once('exit', () => resolve()));
    const dump = await run(criuPath, ['dump', '-t', String(pid), '-D', dir, '--shell-job', '-v4', '-o', 'dump.log'], { allowFailure: true });
    assert.equal(dump.exitCode, 0, `criu dump failed: ${(await readFile(path.join(dir, 'dump.log'), 'utf8')).split('\n').filter((l) => /Error/.test(l)).join('\n')}`);
    assert.match(await readFile(path.join(dir, 'dump.log'), 'utf8'), /Dumping finished successfully/);
    await exited; // CRIU killed it after the dump; we reaped it, so its PID is free for the restore
    const restore = await run(criuPath, ['restore', '-D', dir, '--shell-job', '-d', '--pidfile', path.join(dir, 'restored.pid'), '-v4', '-o', 'restore.log'], { allowFailure: true });
    assert.equal(restore.exitCode, 0, `criu restore failed: ${(await readFile(path.join(dir, 'restore.log'), 'utf8')).split('\n').filter((l) => /Error/.test(l)).join('\n')}`);
    restoredPid = Number((await readFile(path.join(dir, 'restored.pid'), 'utf8')).trim());
    assert.equal(restoredPid, pid, 'CRIU restores a process with its PID');
    assert.ok(isAlive(restoredPid));
    assert.equal(uidOf(restoredPid), NOBODY);
    // Read at rest from the kernel: the limits the shim reported are the ones CRIU put back.
    assert.equal(readFileSync(`/proc/${restoredPid}/limits`, 'utf8'), limitsBefore);
  });
});
