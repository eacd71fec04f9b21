/**
 * Podman as the benchmark's peer (bench/podman.sh does the timed move). Each cloud gets its own
 * Podman storage under its directory; the container runs from an image imported once at the
 * source and copied to the destination's storage ahead (Podman 4.3.1 cannot restore --import a
 * container run from a bare rootfs), in the port the source cloud made for it, named through a
 * path that the move re-points to the destination's port. Everything is removed by close().
 */
import { existsSync } from 'node:fs';
import { mkdir, readdir, rm, rmdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { run } from '../lib/exec';
import { demoRootfs, depsDir } from '../lib/paths';
import { names } from '../providers/local/cloud-config';
import type { LocalCloud } from '../providers/local/local-cloud';
import { finishMove, prepareNetworkAhead, type FloorTimes } from './floor';

const IMAGE = 'localhost/migravi-kv:bench';
const PORT = 9001;
const COMMON = ['--cgroup-manager=cgroupfs', '--events-backend=file', '--runtime', 'runc'];
const runRoot = (cloud: LocalCloud) => `/run/migravi-podman/${cloud.config.testbedId}-${cloud.name}`;

export class PodmanPeer {
  private constructor(private readonly dir: string) {}

  private storage(cloud: LocalCloud): string[] {
    // Podman refuses a runroot longer than 50 characters.
    return ['--root', path.join(cloud.config.dir, 'podman'), '--runroot', runRoot(cloud)];
  }

  private podman(cloud: LocalCloud, args: string[], allowFailure = false) {
    return run('podman', [...this.storage(cloud), ...COMMON, ...args], { allowFailure });
  }

  /** The path the container's network namespace is named by (re-pointed by the move). */
  private netPath(name: string): string {
    return path.join(this.dir, `${name}-net`);
  }

  /** The demo service's image in both clouds' storage (imported at the source, saved and loaded at the destination: same ID). */
  static async open(source: LocalCloud, destination: LocalCloud, workDir: string): Promise<PodmanPeer> {
    const peer = new PodmanPeer(path.join(workDir, 'podman'));
    await mkdir(peer.dir, { recursive: true });
    const rootfsTar = path.join(peer.dir, 'rootfs.tar');
    const imageTar = path.join(peer.dir, 'image.tar');
    await run('tar', ['-C', demoRootfs, '-cf', rootfsTar, '.']);
    await peer.podman(source, ['import', rootfsTar, IMAGE]);
    await peer.podman(source, ['save', '-o', imageTar, IMAGE]);
    await peer.podman(destination, ['load', '-i', imageTar]);
    await rm(rootfsTar);
    await rm(imageTar);
    return peer;
  }

  /** Runs the service in Podman, in the port `source` made for container `name` (its runc container is gone). */
  async deploy(source: LocalCloud, name: string, args: string[]): Promise<void> {
    await source.runtime.remove(name);
    const net = this.netPath(name);
    await writeFile(net, '');
    await run('mount', ['--bind', `/run/netns/${source.controlPlane.portNetns(name)}`, net]);
    await this.podman(source, ['run', '-d', '--name', name, '--network', `ns:${net}`, '--ulimit', 'nofile=1024:1024', '--ulimit', 'nproc=1024:1024', IMAGE, ...args]);
  }

  async move(source: LocalCloud, destination: LocalCloud, name: string): Promise<FloorTimes & { exportBytes: number }> {
    await prepareNetworkAhead(source, destination, name);
    const env = {
      ...process.env,
      NAME: name,
      SRC_STORAGE: this.storage(source).join(' '),
      DST_STORAGE: this.storage(destination).join(' '),
      SRC_NETNS: source.config.netns,
      DST_NETNS: destination.config.netns,
      DST_IP: destination.config.publicIp,
      PORT: String(PORT),
      SRC_EXPORT: path.join(this.dir, `${name}-source.tar`),
      DST_EXPORT: path.join(this.dir, `${name}-destination.tar`),
      SRC_VETH: names.hostVeth(name),
      DST_VETH: names.hostVeth(name),
      CT_NET: this.netPath(name),
      DST_PORT_NS: `/run/netns/${destination.controlPlane.portNetns(name)}`,
      CRIU_DIR: path.join(depsDir, 'bin'),
    };
    const result = await run('bash', [path.join(__dirname, '..', '..', 'bench', 'podman.sh')], { env, allowFailure: true });
    await rm(env.SRC_EXPORT, { force: true });
    await rm(env.DST_EXPORT, { force: true });
    if (result.exitCode !== 0) throw new Error(`Podman move of ${name} failed (exit ${result.exitCode}): ${result.stderr.trim().split('\n').slice(-8).join('\n')}`);
    await finishMove(source, destination, name);
    return JSON.parse(result.stdout.trim().split('\n').pop()!) as FloorTimes & { exportBytes: number };
  }

  /** The container's state in a cloud's Podman ('absent' when it has none). */
  async status(cloud: LocalCloud, name: string): Promise<string> {
    const { exitCode, stdout } = await this.podman(cloud, ['container', 'inspect', '-f', '{{.State.Status}}', name], true);
    return exitCode === 0 ? stdout.trim() : 'absent';
  }

  /** Removes the container from both clouds' Podman and the path its namespace was named by. */
  async remove(clouds: LocalCloud[], name: string): Promise<void> {
    for (const cloud of clouds) await this.podman(cloud, ['rm', '-f', '--ignore', name], true);
    const net = this.netPath(name);
    if (existsSync(net)) {
      await run('umount', [net], { allowFailure: true });
      await rm(net, { force: true });
    }
  }

  /** Everything Podman holds in both clouds (containers, image, storage mounts), then its files (also after a failed open). */
  static async close(clouds: LocalCloud[], workDir: string): Promise<void> {
    const peer = new PodmanPeer(path.join(workDir, 'podman'));
    for (const cloud of clouds) {
      if (!existsSync(path.join(cloud.config.dir, 'podman'))) continue;
      await peer.podman(cloud, ['system', 'reset', '--force'], true);
      await rm(path.join(cloud.config.dir, 'podman'), { recursive: true, force: true });
      await rm(runRoot(cloud), { recursive: true, force: true });
    }
    await rmdir('/run/migravi-podman').catch(() => undefined);
    for (const net of existsSync(peer.dir) ? await readdir(peer.dir) : []) {
      if (net.endsWith('-net')) await run('umount', [path.join(peer.dir, net)], { allowFailure: true });
    }
    await rm(peer.dir, { recursive: true, force: true });
  }
}
