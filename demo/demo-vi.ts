/**
 * The demo virtual infrastructure is described by demo/demo.vi.yaml (a VI file like any user's):
 * this module loads it for the demo and the tests, and names the addresses their clients use.
 */
import path from 'node:path';
import { repoRoot } from '../lib/paths';
import type { ContainerSpec } from '../lib/types';
import { loadViFile } from '../lib/vi-file';
import type { ViSpec } from '../lib/vi-spec';

export const DEMO_VI_FILE = path.join(repoRoot, 'demo', 'demo.vi.yaml');

/** The VI's name: a plan may move it by this name (inventory finds its containers). */
export const DEMO_VI = 'demo';

export const KV_IP = '192.0.2.10';
export const KV_PORT = 7000;
export const WEB_IP = '192.0.2.20';
export const WEB_PORT = 80;

/** Where the demo VI file keeps the database's volume (a user's host directory). */
const FILE_VOLUME_ROOT = '/var/lib/migravi/volumes/demo/';

/**
 * The demo VI from its file. `ballastMiB` replaces the counter service's memory ballast; `only`
 * keeps some containers (and the networks they use), e.g. tests that need only the counter
 * service; `volumeRoot` puts the volumes under a directory of the testbed's instead of the
 * file's host path, so every testbed has its own data and its teardown removes it.
 */
export async function loadDemoVi(opts: { ballastMiB?: number; only?: string[]; volumeRoot?: string } = {}): Promise<ViSpec> {
  const vi = await loadViFile(DEMO_VI_FILE);
  const containers = vi.containers
    .filter((c) => !opts.only || opts.only.includes(c.name))
    .map((c) => (c.name === 'kv' && opts.ballastMiB !== undefined ? { ...c, command: [c.command[0]!, c.command[1]!, String(opts.ballastMiB)] } : c))
    .map((c) => (opts.volumeRoot ? { ...c, volumes: c.volumes.map((v) => ({ ...v, source: v.source.replace(FILE_VOLUME_ROOT, `${opts.volumeRoot}/`) })) } : c));
  const used = new Set(containers.flatMap((c) => c.networks.map((a) => a.network)));
  const records = vi.dns?.records.filter((r) => containers.some((c) => c.name === r.container)) ?? [];
  const { dns, ...rest } = vi;
  return { ...rest, networks: vi.networks.filter((n) => used.has(n.name)), containers, ...(dns && records.length ? { dns: { ...dns, records } } : {}) };
}

/** The client's place on the private network: a port without a container, the client runs in it. */
export const clientPort: ContainerSpec = {
  name: 'client',
  interfaces: [{ network: 'vi-net', ip: '192.0.2.100', mac: '02:00:c0:00:02:64' }],
  args: [],
  readonlyRootfs: true,
};
