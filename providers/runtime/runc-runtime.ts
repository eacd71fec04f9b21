import { spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { chown, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { run, CommandError, trackChild, type RunResult } from '../../lib/exec';
import { currentAttempt } from '../../lib/attempt-scope';
import type { ContainerSpec } from '../../lib/types';
import type { ContainerStatus, HostRuntime, LazyMemoryState } from '../provider';
import { imageTasks, lazyPageCount, PAGE_SIZE, type PageServerClient } from './criu-pages';
import * as lazy from './lazy-restore';
import * as fence from './fence-timer';
import * as held from './lazy-dump';
import { establishedConnections } from './criu-tcp';
import { depsDir } from '../../lib/paths';
import { waitFor } from '../../lib/processes';

const NUDGE_PATH = path.join(depsDir, 'bin', 'migravi-tcp-nudge');

const DEFAULT_CAPABILITIES = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FSETID', 'CAP_FOWNER', 'CAP_MKNOD', 'CAP_NET_RAW', 'CAP_SETGID', 'CAP_SETUID',
  'CAP_SETFCAP', 'CAP_SETPCAP', 'CAP_NET_BIND_SERVICE', 'CAP_SYS_CHROOT', 'CAP_KILL', 'CAP_AUDIT_WRITE',
];

export interface RuncRuntimeOptions {
  /** runc's state directory for this cloud (so two clouds on one machine never mix containers). */
  stateRoot: string;
  /** Where bundles (config.json + rootfs) live, one directory per container. */
  bundlesDir: string;
  /** CRIU wrapper handed to runc with --criu. */
  criuPath: string;
  /** Prefix of cgroup paths, unique per cloud. */
  cgroupPrefix: string;
  /**
   * The network namespace a container's port is realised in on this host (by the provider: the
   * embedded cloud's edge, or an agent plugging a Neutron port). The runtime runs the container
   * there; callers only ask the control plane for the port.
   */
  netnsOf(containerName: string): string;
}

/**
 * Containers on a Linux host with runc, checkpointed and restored by CRIU. Provider-neutral: the
 * same code serves every cloud; only where its ports are realised (RuncRuntimeOptions.netnsOf) differs.
 */
export class RuncRuntime implements HostRuntime {
  constructor(private readonly opts: RuncRuntimeOptions) {}

  bundleDir(name: string): string {
    return path.join(this.opts.bundlesDir, name);
  }

  private restorePgidFile(name: string): string {
    return path.join(this.bundleDir(name), 'restore.pgid');
  }

  /** A restored copy's lease (providers/runtime/fence-timer.ts): killed at `untilMs` unless disarmed. */
  async armFence(name: string, untilMs: number): Promise<void> {
    await mkdir(this.bundleDir(name), { recursive: true });
    await fence.startFence(this.bundleDir(name), this.opts.stateRoot, name, untilMs);
  }

  /** Moves a running lease's end later; does nothing when none runs (not started yet, or committed). */
  async renewFence(name: string, untilMs: number): Promise<void> {
    await fence.renewFence(this.bundleDir(name), name, untilMs);
  }

  /** The group committed: the copy stays. Throws when its lease ran out first (it was killed). */
  async disarmFence(name: string): Promise<void> {
    await fence.disarmFence(this.bundleDir(name), name);
  }

  fenceFired(name: string): boolean {
    return fence.fenceFired(this.bundleDir(name));
  }

  /** runc's global options for this cloud: its own state directory and sid's CRIU. */
  private globalArgs(): string[] {
    return ['--root', this.opts.stateRoot, '--criu', this.opts.criuPath];
  }

  private runc(args: string[], allowFailure = false): Promise<RunResult> {
    return run('runc', [...this.globalArgs(), ...args], { allowFailure });
  }

  /** Forgets a container (killing it if it runs); nothing to do when there is none. */
  private async runcDelete(name: string): Promise<void> {
    await this.runc(['delete', '--force', name], true);
  }

  async status(name: string): Promise<ContainerStatus> {
    const result = await this.runc(['state', name], true);
    if (result.exitCode !== 0) return 'absent';
    const state = (JSON.parse(result.stdout) as { status: string }).status;
    return state === 'running' ? 'running' : state === 'paused' ? 'paused' : 'stopped';
  }

  private async writeBundleConfig(spec: ContainerSpec, netnsPath: string): Promise<void> {
    const criuConfig = path.join(this.bundleDir(spec.name), 'criu.conf');
    // network-lock nftables: CRIU keeps the container's network shut while it dumps and restores
    // either way, but its default (iptables) runs iptables-restore and ip6tables-restore as child
    // processes to lock and again to unlock: measured here, a restore of the benchmark's 64 MiB
    // service took 209–294 ms with it and 140–160 ms with nftables (libnftables, in process).
    await writeFile(criuConfig, 'address 127.0.0.1\nnetwork-lock nftables\n');
    const config = {
      ociVersion: '1.0.2-dev',
      process: {
        terminal: false,
        user: spec.user ?? { uid: 0, gid: 0 },
        args: spec.args,
        env: withDefaultPath(spec.env ?? []),
        cwd: spec.cwd ?? '/',
        // The usual container default set (Docker's): servers such as nginx drop their workers to
        // another user (SETUID/SETGID) and own their files (CHOWN, FOWNER, DAC_OVERRIDE).
        capabilities: Object.fromEntries(['bounding', 'effective', 'permitted'].map((set) => [set, DEFAULT_CAPABILITIES])),
        rlimits: [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }],
        noNewPrivileges: true,
      },
      root: { path: 'rootfs', readonly: spec.readonlyRootfs },
      hostname: spec.name,
      // CRIU reads these options too: a post-copy dump holding the processes waits for its client
      // on the loopback only (over runc's RPC, CRIU's lazy-pages listener ignores the address given).
      annotations: { 'org.criu.config': criuConfig },
      mounts: [
        { destination: '/proc', type: 'proc', source: 'proc' },
        { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
        { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'] },
        { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
        { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
        // Bind mounts: runc hands them to CRIU as external mounts, so a restore binds whatever
        // directory this cloud keeps the volume in (it differs from the source's).
        ...(spec.volumes ?? []).map((v) => ({ destination: v.target, type: 'bind', source: v.source, options: ['rbind', v.readOnly ? 'ro' : 'rw'] })),
      ],
      linux: {
        cgroupsPath: `${this.opts.cgroupPrefix}/${spec.name}`,
        resources: { devices: [{ allow: false, access: 'rwm' }] },
        // The network namespace is given by path: it is the port the control plane prepared, and
        // runc treats it as external, so a restore joins the destination's port with the same IP/MAC.
        namespaces: [{ type: 'pid' }, { type: 'network', path: netnsPath }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }],
        maskedPaths: ['/proc/acpi', '/proc/kcore', '/proc/keys', '/proc/latency_stats', '/proc/timer_list', '/proc/sched_debug', '/sys/firmware', '/proc/scsi'],
        readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
      },
    };
    await writeFile(path.join(this.bundleDir(spec.name), 'config.json'), JSON.stringify(config, null, 2));
  }

  /**
   * Starts `runc` detached with its stdio on /dev/null: a container whose stdio is a host pipe or
   * file cannot be checkpointed (PLATFORM.md). runc's own errors come back through --log.
   */
  private async runcDetached(args: string[], name: string, opts: { pgidFile?: string } = {}): Promise<void> {
    const logFile = path.join(this.bundleDir(name), 'runc.log');
    const argv = [...this.globalArgs(), '--log', logFile, ...args];
    const exitCode = await new Promise<number | null>((resolve, reject) => {
      // In an activity, runc gets its own process group so a given-up attempt can kill it and CRIU
      // (and a restore's fence timer too, once its lease ran out).
      const detached = currentAttempt() !== undefined || opts.pgidFile !== undefined;
      const child = spawn('runc', argv, { stdio: 'ignore', detached });
      if (opts.pgidFile && child.pid) writeFileSync(opts.pgidFile, String(child.pid));
      const untrack = trackChild(child);
      child.on('error', reject);
      child.on('close', (code) => {
        untrack();
        resolve(code);
      });
    });
    if (exitCode !== 0) {
      const { stdout } = await run('tail', ['-n', '20', logFile], { allowFailure: true });
      throw new CommandError(`runc ${argv.join(' ')}`, exitCode, stdout);
    }
  }

  async run(spec: ContainerSpec, rootfsDir: string): Promise<void> {
    const netnsPath = this.opts.netnsOf(spec.name);
    if ((await this.status(spec.name)) === 'running') return;
    await this.remove(spec.name);
    const bundle = this.bundleDir(spec.name);
    await mkdir(bundle, { recursive: true });
    if (/\.(tar|tar\.gz|tgz)$/.test(rootfsDir)) {
      await mkdir(path.join(bundle, 'rootfs'));
      await run('tar', ['-xf', rootfsDir, '-C', path.join(bundle, 'rootfs'), '--numeric-owner']);
    } else {
      await run('cp', ['-a', rootfsDir, path.join(bundle, 'rootfs')]);
    }
    for (const v of spec.volumes ?? []) {
      // A volume created here starts empty and belongs to the container's user (who must write it).
      if (!existsSync(v.source)) {
        await mkdir(v.source, { recursive: true });
        if (spec.user) await chown(v.source, spec.user.uid, spec.user.gid);
      }
    }
    await this.writeBundleConfig(spec, netnsPath);
    await this.runcDetached(['run', '--detach', '--bundle', bundle, spec.name], spec.name);
  }

  async checkpoint(name: string, imageDir: string, keepTcp: boolean): Promise<void> {
    // The caller hands an empty directory (or a link to one: an image kept in memory).
    await mkdir(imageDir, { recursive: true });
    const workDir = `${imageDir}.work`;
    await mkdir(workDir, { recursive: true });
    await this.freezeForDump(name);
    await this.runc(['checkpoint', '--image-path', imageDir, '--work-path', workDir, ...(keepTcp ? ['--tcp-established'] : []), name]).catch(
      async (err: unknown) => {
        throw new Error(`${(err as Error).message}\n${await criuLogTail(workDir, 'dump.log')}`);
      },
    );
  }

  /**
   * Post-copy, source: freezes the container and dumps all but its lazy memory into `lazyDir`; its
   * processes stay held (frozen, seized by CRIU) until the durable image is written from them
   * (servePagesFromHeld / settleHeldDump). providers/runtime/lazy-dump.ts says why this is safe.
   */
  async checkpointHeld(name: string, lazyDir: string, keepTcp: boolean): Promise<void> {
    await this.freezeForDump(name);
    await held.startHeldDump(['runc', ...this.globalArgs(), '--log', path.join(this.bundleDir(name), 'runc.log')], name, lazyDir, keepTcp, this.heldDumpPidFile(name));
    // CRIU thaws the cgroup once it has seized the processes and holds them by ptrace alone: if
    // it died, they would run again here while their copy runs at the destination. Frozen, they
    // stay stopped whatever happens to their dump (and runc shows them paused).
    await this.freezeForDump(name);
  }

  private async thaw(name: string): Promise<void> {
    await cgroupFreezer(`${this.opts.cgroupPrefix}/${name}`)?.set(false);
  }

  private heldDumpPidFile(name: string): string {
    return path.join(this.bundleDir(name), 'held-dump.pid');
  }

  /** "holding" too when the dump's CRIU died after it held them: the processes, frozen here, still have the memory. */
  async heldDumpState(name: string, lazyDir: string): Promise<'holding' | 'released' | 'failed' | 'none'> {
    const state = await held.heldDumpState(lazyDir);
    if (state !== 'orphaned') return state;
    return (await this.status(name)) === 'paused' ? 'holding' : 'failed';
  }

  /** The held processes go: ended by their dump, or — their dump's CRIU dead — with their container. */
  private async letHeldGo(name: string, lazyDir: string): Promise<void> {
    if ((await held.heldDumpState(lazyDir)) === 'orphaned') await this.runcDelete(name);
    else await held.releaseHeldDump(lazyDir, () => this.thaw(name));
  }

  /** Memory of a held dump: sent in the freeze (eager) and served afterwards (lazy). */
  async heldDumpBytes(lazyDir: string): Promise<{ lazyBytes: number; eagerBytes: number }> {
    const tasks = await imageTasks(lazyDir);
    const eagerPages = tasks.reduce((sum, t) => sum + t.entries.filter((e) => e.offset !== undefined).reduce((s, e) => s + e.pages, 0), 0);
    return { lazyBytes: lazyPageCount(tasks) * PAGE_SIZE, eagerBytes: eagerPages * PAGE_SIZE };
  }

  /** Serves a held dump's lazy pages on the loopback's `port` from its processes, and writes its durable image into `imageDir` meanwhile. */
  async servePagesFromHeld(name: string, lazyDir: string, imageDir: string, port: number, onChunk: () => Promise<void>, log: (line: string) => void): Promise<void> {
    const pid = await this.statePid(name);
    if (!pid) throw new Error(`${name} has no held processes to serve its memory from`);
    await held.HeldPageSource.start(lazyDir, imageDir, pid, port, onChunk, log, () => this.letHeldGo(name, lazyDir));
  }

  /**
   * The held dump's memory safe in its durable image (written now if no page source of this
   * worker is writing it) and its processes let go. False when neither exists any more. Without
   * `imageNeeded` (the group committed) they are let go at once.
   */
  async settleHeldDump(name: string, lazyDir: string, imageDir: string, opts: { imageNeeded?: boolean } = {}): Promise<boolean> {
    const imageNeeded = opts.imageNeeded ?? true;
    const source = held.HeldPageSource.get(imageDir);
    if (source) {
      await source.stop({ abandonImage: !imageNeeded });
      if (await source.written) return true;
    }
    if (!imageNeeded || (await held.writtenFromProcesses(imageDir))) {
      await this.letHeldGo(name, lazyDir);
      return true;
    }
    if ((await this.heldDumpState(name, lazyDir)) !== 'holding') return false;
    const pid = await this.statePid(name);
    if (!pid) return false;
    await held.writeImageFromProcesses(lazyDir, imageDir, await lazy.hostPidsByImagePid(pid), async () => undefined);
    await this.letHeldGo(name, lazyDir);
    return true;
  }

  /**
   * CRIU freezes a running container's cgroup itself, then checks the freezer every 100 ms
   * (criu/seize.c): its first check comes too early, so ~100 ms of every dump was a sleep. Frozen
   * here first (checked every millisecond), the cgroup is found frozen and CRIU seizes its tasks
   * at once. A dump that fails leaves the container paused, as one CRIU froze itself would be:
   * the retry or the rollback thaws it.
   */
  private async freezeForDump(name: string): Promise<void> {
    const freezer = cgroupFreezer(`${this.opts.cgroupPrefix}/${name}`);
    if (!freezer) return; // CRIU freezes it itself
    await freezer.set(true);
    try {
      await waitFor(`the cgroup of ${name} to freeze`, freezer.frozen, 5_000, 1);
    } catch (err) {
      await freezer.set(false);
      throw err;
    }
  }

  async restore(spec: ContainerSpec, imageDir: string, keepTcp: boolean): Promise<void> {
    const netnsPath = this.opts.netnsOf(spec.name);
    const status = await this.status(spec.name);
    if (status === 'running') return;
    if (status !== 'absent') await this.runcDelete(spec.name); // a stopped one left by a failed attempt
    const bundle = this.bundleDir(spec.name);
    await this.writeBundleConfig(spec, netnsPath);
    const workDir = `${imageDir}.work`;
    await mkdir(workDir, { recursive: true });
    await destroyLeftoverSockets(workDir, imageDir, netnsPath);
    const args = ['restore', '--detach', '--image-path', imageDir, '--work-path', workDir, '--bundle', bundle, ...(keepTcp ? ['--tcp-established'] : []), spec.name];
    await this.runcDetached(args, spec.name, { pgidFile: this.restorePgidFile(spec.name) }).catch(async (err: unknown) => {
      throw new Error(`${(err as Error).message}\n${await criuLogTail(workDir, 'restore.log')}\n${await socketsOf(netnsPath)}`);
    });
  }

  async servePages(imageDir: string, port: number, opts: { awaitListening?: boolean } = {}): Promise<void> {
    await lazy.servePages(this.opts.criuPath, imageDir, port, opts.awaitListening ?? true);
  }

  async stopServingPages(imageDir: string): Promise<void> {
    await held.HeldPageSource.get(imageDir)?.stop();
    await lazy.stopServingPages(imageDir);
  }

  /**
   * Post-copy restore: the lazy-pages daemon and the guard first, then `runc restore
   * --lazy-pages` with the daemon's work directory (CRIU hands it the processes' userfaultfds).
   */
  async restoreLazy(spec: ContainerSpec, imageDir: string, keepTcp: boolean, pageServerPort: number): Promise<void> {
    const netnsPath = this.opts.netnsOf(spec.name);
    const status = await this.status(spec.name);
    if (status === 'running') return;
    if (status !== 'absent') await this.runcDelete(spec.name);
    await this.endLazyRestore(imageDir); // what a failed attempt left
    const workDir = `${imageDir}.work`;
    await destroyLeftoverSockets(workDir, imageDir, netnsPath);
    await this.writeBundleConfig(spec, netnsPath);
    await lazy.startLazyPages(this.opts.criuPath, imageDir, pageServerPort);
    const args = ['restore', '--detach', '--lazy-pages', '--image-path', imageDir, '--work-path', workDir, '--bundle', this.bundleDir(spec.name), ...(keepTcp ? ['--tcp-established'] : []), spec.name];
    await this.runcDetached(args, spec.name, { pgidFile: this.restorePgidFile(spec.name) }).catch(async (err: unknown) => {
      const daemon = await lazy.lazyDaemonState(imageDir);
      await lazy.endLazyRestore(imageDir);
      throw new Error(`${(err as Error).message}\n${await criuLogTail(workDir, 'restore.log')}\nCRIU's lazy-pages daemon: ${daemon}\n${await criuLogTail(workDir, 'lazy-pages.log')}\n${await socketsOf(netnsPath)}`);
    });
  }

  async holdLazyMemory(imageDir: string): Promise<number> {
    const held = (await lazy.holdUserfaultfds(imageDir)).length;
    // One userfaultfd per restored process with memory (each has a pagemap): all, or it is not safe.
    const tasks = await this.taskCount(imageDir);
    if (held < tasks) throw new Error(`the guard holds ${held} userfaultfd(s) of ${tasks} restored processes`);
    return held;
  }

  async lazyMemoryState(name: string, imageDir: string, opts: { countMissing?: boolean } = {}): Promise<LazyMemoryState> {
    const daemon = await lazy.lazyDaemonState(imageDir);
    // Guarded means holding every process's userfaultfd, not merely running.
    const tasks = await this.taskCount(imageDir);
    const guarded = (await lazy.guardAlive(imageDir)) && (await lazy.holdUserfaultfds(imageDir).catch(() => [])).length >= tasks;
    const pid = await this.initPid(name);
    // Reading every page's entry costs CPU the window needs: only once the daemon has ended.
    const missing = pid && (daemon !== 'running' || opts.countMissing) ? await lazy.missingPages(imageDir, pid) : [];
    return {
      daemon,
      guarded,
      running: pid !== undefined,
      missingPages: missing.reduce((sum, m) => sum + m.runs.reduce((s, r) => s + r.pages, 0), 0),
    };
  }

  async fillLazyMemory(name: string, imageDir: string, source: PageServerClient, onProgress: () => void): Promise<lazy.FillResult> {
    const pid = await this.initPid(name);
    if (!pid) throw new Error(`${name} does not run: no memory to fill`);
    return lazy.fillMissingPages(imageDir, pid, source, onProgress);
  }

  /** Processes of a received image: read once per lazy restore, not on every poll of its window. */
  private readonly taskCounts = new Map<string, Promise<number>>();

  private taskCount(imageDir: string): Promise<number> {
    let count = this.taskCounts.get(imageDir);
    if (!count) {
      count = imageTasks(imageDir).then((tasks) => tasks.length);
      count.catch(() => this.taskCounts.delete(imageDir));
      this.taskCounts.set(imageDir, count);
    }
    return count;
  }

  async endLazyRestore(imageDir: string): Promise<void> {
    this.taskCounts.delete(imageDir);
    await lazy.endLazyRestore(imageDir);
  }

  /** The host PID of the container's first process, running or frozen. */
  private async statePid(name: string): Promise<number | undefined> {
    const result = await this.runc(['state', name], true);
    if (result.exitCode !== 0) return undefined;
    const state = JSON.parse(result.stdout) as { pid: number };
    return state.pid > 0 ? state.pid : undefined;
  }

  /** The host PID of the container's first process, while it runs. */
  private async initPid(name: string): Promise<number | undefined> {
    const result = await this.runc(['state', name], true);
    if (result.exitCode !== 0) return undefined;
    const state = JSON.parse(result.stdout) as { status: string; pid: number };
    return state.status === 'running' && state.pid > 0 ? state.pid : undefined;
  }

  /**
   * ICMP "host unreachable" quoting each peer's first unacknowledged byte, 15 times 1 ms apart,
   * from the container's address (scripts/tcp-nudge.c says why this works and is safe).
   */
  async nudgePeers(name: string, imageDir: string): Promise<number> {
    const netnsPath = this.opts.netnsOf(name);
    const connections = await establishedConnections(imageDir);
    if (!connections.length) return 0;
    const args = connections.map((c) => `${c.peer}:${c.peerPort}:${c.local}:${c.localPort}:${c.rcvNxt}`);
    await run('nsenter', [`--net=${netnsPath}`, NUDGE_PATH, '15', '1000', ...args]);
    return connections.length;
  }

  /**
   * Thaws a container frozen for a dump that did not complete. A CRIU that died after locking the
   * container's network (killed, out of memory) left its lock there — a table `inet CRIU-<run id>`
   * that drops everything but CRIU's own packets (its unlock never ran): thawed behind it, the
   * processes would run unreachable. No CRIU works on a container being thawed, so every such
   * table is a leftover.
   */
  async resume(name: string): Promise<void> {
    const pid = await this.statePid(name);
    if (pid) {
      const nft = (...args: string[]) => run('nsenter', [`--net=/proc/${pid}/ns/net`, 'nft', ...args]);
      for (const [, table] of (await nft('list', 'tables')).stdout.matchAll(/^table inet (CRIU-\S+)$/gm)) await nft('delete', 'table', 'inet', table!);
    }
    await this.runc(['resume', name]);
  }

  /**
   * CRIU says so in its own log: runc removes a container only after a successful dump, so an
   * image whose dump.log ends in success is complete even if the worker died before recording it.
   */
  async checkpointComplete(imageDir: string): Promise<boolean> {
    const log = await readFile(path.join(`${imageDir}.work`, 'dump.log'), 'utf8').catch(() => '');
    return /Dumping finished successfully/.test(log) || (await held.writtenFromProcesses(imageDir));
  }

  async remove(name: string): Promise<void> {
    await fence.stopFence(this.bundleDir(name));
    await held.killHeldDump(this.heldDumpPidFile(name));
    await this.runcDelete(name);
    await rm(this.bundleDir(name), { recursive: true, force: true });
  }

  /** From the container's memory cgroup: anonymous plus shared memory (cgroup v1 "rss"+"shmem", v2 "anon"+"shmem"). */
  async memoryBytes(name: string): Promise<number> {
    const cgroup = `${this.opts.cgroupPrefix}/${name}`;
    for (const [file, fields] of [
      [path.join('/sys/fs/cgroup/memory', cgroup, 'memory.stat'), ['rss', 'shmem']],
      [path.join('/sys/fs/cgroup', cgroup, 'memory.stat'), ['anon', 'shmem']],
    ] as const) {
      const text = await readFile(file, 'utf8').catch(() => undefined);
      if (!text) continue;
      const stat = Object.fromEntries(text.split('\n').map((line) => line.split(' ')).map(([k, v]) => [k, Number(v)]));
      return fields.reduce((sum, f) => sum + (stat[f] ?? 0), 0);
    }
    throw new Error(`no memory cgroup for container ${name} (${cgroup})`);
  }

  async lateStartedProcess(name: string): Promise<{ pid: number; afterMs: number } | undefined> {
    const cgroup = `${this.opts.cgroupPrefix}/${name}`;
    let procs: string | undefined;
    for (const file of [path.join('/sys/fs/cgroup/memory', cgroup, 'cgroup.procs'), path.join('/sys/fs/cgroup', cgroup, 'cgroup.procs')]) {
      procs = await readFile(file, 'utf8').catch(() => undefined);
      if (procs !== undefined) break;
    }
    if (procs === undefined) throw new Error(`no cgroup for container ${name} (${cgroup})`);
    const started: Array<{ pid: number; ticks: number }> = [];
    for (const pid of procs.split('\n').filter(Boolean).map(Number)) {
      const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined); // it may have exited since
      // Field 22, start time in clock ticks since boot; the command (field 2) may hold spaces, so count after its ")".
      const ticks = stat ? Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]) : NaN;
      if (Number.isFinite(ticks)) started.push({ pid, ticks });
    }
    if (started.length < 2) return undefined;
    const first = Math.min(...started.map((p) => p.ticks));
    const latest = started.reduce((a, b) => (b.ticks > a.ticks ? b : a));
    // /proc counts in USER_HZ, 100 a second on Linux whatever the kernel's own HZ.
    const afterMs = ((latest.ticks - first) * 1000) / 100;
    return afterMs >= 1000 ? { pid: latest.pid, afterMs } : undefined;
  }

  async preflight(): Promise<string[]> {
    const problems: string[] = [];
    const check = await run(this.opts.criuPath, ['check'], { allowFailure: true });
    if (check.exitCode !== 0) problems.push(`criu check failed: ${(check.stderr || check.stdout).trim().split('\n').slice(-3).join(' | ')}`);
    const runc = await run('runc', ['--version'], { allowFailure: true });
    if (runc.exitCode !== 0) problems.push('runc is not installed');
    return problems;
  }
}

function withDefaultPath(env: string[]): string[] {
  return env.some((e) => e.startsWith('PATH=')) ? env : ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', ...env];
}

/** The freezer of a cgroup (v1 or v2), if it has one. */
function cgroupFreezer(cgroup: string): { set(frozen: boolean): Promise<void>; frozen(): Promise<boolean> } | undefined {
  const v1 = path.join('/sys/fs/cgroup/freezer', cgroup, 'freezer.state');
  if (existsSync(v1)) {
    return { set: (on) => writeFile(v1, on ? 'FROZEN' : 'THAWED'), frozen: async () => (await readFile(v1, 'utf8')).trim() === 'FROZEN' };
  }
  const v2 = path.join('/sys/fs/cgroup', cgroup);
  if (existsSync(path.join(v2, 'cgroup.freeze'))) {
    return { set: (on) => writeFile(path.join(v2, 'cgroup.freeze'), on ? '1' : '0'), frozen: async () => /^frozen 1$/m.test(await readFile(path.join(v2, 'cgroup.events'), 'utf8')) };
  }
  return undefined;
}

/**
 * A restore attempt that failed after CRIU unlocked the network had its processes killed by CRIU:
 * their sockets' FINs, dropped by the close guard, leave them in FIN-WAIT holding the
 * connections' 4-tuples, and the next attempt's CRIU cannot bind them back ("Cannot assign
 * requested address"). After an earlier attempt (its log is in the work directory), the sockets
 * on the image's connections are destroyed — those only: whatever else holds the namespace's
 * ports is not this migration's to close. Their RSTs are dropped by the guard too.
 */
async function destroyLeftoverSockets(workDir: string, imageDir: string, netnsPath: string): Promise<void> {
  if (!existsSync(path.join(workDir, 'restore.log'))) return;
  const connections = await establishedConnections(imageDir);
  if (!connections.length) return;
  const filter = connections.map((c) => `( src ${c.local}:${c.localPort} and dst ${c.peer}:${c.peerPort} )`).join(' or ');
  await run('nsenter', [`--net=${netnsPath}`, 'ss', '-K', '-tan', filter]);
}

/**
 * The addresses and TCP sockets of the namespace a restore went into: a TCP connection that
 * cannot be restored ("Can't connect inet socket back") says why here (its address missing, or
 * its 4-tuple already taken).
 */
async function socketsOf(netnsPath: string): Promise<string> {
  const addresses = await run('nsenter', [`--net=${netnsPath}`, 'ip', '-br', 'addr'], { allowFailure: true });
  const sockets = await run('nsenter', [`--net=${netnsPath}`, 'ss', '-tan'], { allowFailure: true });
  return `the restore's network namespace (${netnsPath}):\n${addresses.stdout.trim() || addresses.stderr.trim()}\n${sockets.stdout.trim() || sockets.stderr.trim()}`;
}

async function criuLogTail(workDir: string, log: string): Promise<string> {
  const { stdout } = await run('tail', ['-n', '15', path.join(workDir, log)], { allowFailure: true });
  return stdout ? `last lines of CRIU's ${log}:\n${stdout}` : '';
}
