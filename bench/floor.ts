/**
 * Moves one container the way bench/floor.sh does by hand, after preparing what a person would
 * prepare ahead (untimed): the network replicated and stretched, the destination's port (unplugged)
 * and bundle (rootfs copied, config pointing at the destination's port and cgroup), outgoing RSTs
 * dropped on both sides. Afterwards the container is registered at the destination like any
 * container of the cloud, so the benchmark's clean-up removes it the usual way.
 */
import { cp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { run } from '../lib/exec';
import { names } from '../providers/local/cloud-config';
import type { LocalCloud } from '../providers/local/local-cloud';
import { measureCompression, type CompressionSample } from './compression';

export interface FloorTimes {
  /** Epoch ms at which the checkpoint started. */
  startedAt: number;
  checkpointMs: number;
  copyMs: number;
  restoreMs: number;
  totalMs: number;
  /** When asked for: how the received image compresses (measured after the move, untimed). */
  compression?: CompressionSample[];
}

const FLOOR_PORT = 9000;

/**
 * What any hand-run move needs before the clock starts (untimed): the container's networks
 * replicated and stretched, its port at the destination (unplugged), outgoing RSTs dropped on both
 * sides while the connection is frozen (PLATFORM.md).
 */
export async function prepareNetworkAhead(source: LocalCloud, destination: LocalCloud, name: string): Promise<void> {
  const spec = (await source.controlPlane.listContainers())[name];
  if (!spec) throw new Error(`no container ${name} in ${source.name}`);
  for (const iface of spec.interfaces) {
    const network = await source.controlPlane.getNetwork(iface.network);
    if (!network) throw new Error(`no network ${iface.network} in ${source.name}`);
    await destination.controlPlane.ensureNetwork(network);
    await destination.controlPlane.ensureStretch(network, source.config.publicIp);
    await source.controlPlane.ensureStretch(network, destination.config.publicIp);
  }
  await destination.controlPlane.ensurePort(spec);
  await destination.controlPlane.setPortEnabled(name, false);
  await source.controlPlane.setCloseGuard(name, true);
  await destination.controlPlane.setCloseGuard(name, true);
}

/** After a hand-run move: the guards go, and the destination's cloud knows the container (so clean-up finds it). */
export async function finishMove(source: LocalCloud, destination: LocalCloud, name: string): Promise<void> {
  const spec = (await source.controlPlane.listContainers())[name]!;
  await destination.controlPlane.setCloseGuard(name, false);
  await destination.controlPlane.registerContainer(spec);
  await source.controlPlane.setCloseGuard(name, false);
}

/** The floor also needs the destination's bundle: the same rootfs, a config naming the destination's port and cgroup. */
async function prepareAhead(source: LocalCloud, destination: LocalCloud, name: string): Promise<void> {
  await prepareNetworkAhead(source, destination, name);
  // The bundle: the same rootfs and config, but the destination's port and cgroup.
  const sourceBundle = source.runtime.bundleDir(name);
  const bundle = destination.runtime.bundleDir(name);
  await rm(bundle, { recursive: true, force: true });
  await mkdir(bundle, { recursive: true });
  await cp(path.join(sourceBundle, 'rootfs'), path.join(bundle, 'rootfs'), { recursive: true, verbatimSymlinks: true, preserveTimestamps: true });
  const config = JSON.parse(await readFile(path.join(sourceBundle, 'config.json'), 'utf8')) as {
    linux: { cgroupsPath: string; namespaces: Array<{ type: string; path?: string }> };
  };
  config.linux.cgroupsPath = `/${destination.config.testbedId}/${destination.name}/${name}`;
  for (const ns of config.linux.namespaces) if (ns.type === 'network') ns.path = `/run/netns/${destination.controlPlane.portNetns(name)}`;
  await writeFile(path.join(bundle, 'config.json'), JSON.stringify(config, null, 2));
}

/** One floor move of container `name` from `source` to `destination`; the times floor.sh measured. */
export async function floorMove(source: LocalCloud, destination: LocalCloud, name: string, workDir: string, opts: { compression?: boolean } = {}): Promise<FloorTimes> {
  await prepareAhead(source, destination, name);
  const dir = path.join(workDir, `floor-${name}`);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const env = {
    ...process.env,
    NAME: name,
    SRC_RUNC_ROOT: path.join(source.config.dir, 'runc'),
    DST_RUNC_ROOT: path.join(destination.config.dir, 'runc'),
    CRIU: source.config.criuPath,
    SRC_NETNS: source.config.netns,
    DST_NETNS: destination.config.netns,
    DST_IP: destination.config.publicIp,
    PORT: String(FLOOR_PORT),
    SRC_IMG: path.join(dir, 'source-image'),
    DST_IMG: path.join(dir, 'destination-image'),
    DST_BUNDLE: destination.runtime.bundleDir(name),
    SRC_VETH: names.hostVeth(name),
    DST_VETH: names.hostVeth(name),
    LOG: path.join(dir, 'runc.log'),
  };
  const result = await run('bash', [path.join(__dirname, '..', '..', 'bench', 'floor.sh')], { env, allowFailure: true });
  if (result.exitCode !== 0) {
    const log = await readFile(env.LOG, 'utf8').catch(() => '');
    throw new Error(`floor move of ${name} failed (exit ${result.exitCode}): ${result.stderr.trim()}\n${log.split('\n').slice(-10).join('\n')}`);
  }
  const times = JSON.parse(result.stdout.trim().split('\n').pop()!) as FloorTimes;
  await finishMove(source, destination, name);
  if (opts.compression) times.compression = await measureCompression(env.DST_IMG, path.join(dir, 'packed'));
  await rm(dir, { recursive: true, force: true });
  return times;
}
