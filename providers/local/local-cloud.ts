import path from 'node:path';
import type { Cloud } from '../provider';
import { RuncRuntime } from '../runtime/runc-runtime';
import { loadCloudConfig, names, type LocalCloudConfig } from './cloud-config';
import { LocalControlPlane } from './control-plane';

export interface LocalCloud extends Cloud {
  config: LocalCloudConfig;
  controlPlane: LocalControlPlane;
}

/** One embedded cloud, as the testbed tools open it from its config on disk. */
export function openLocalCloud(stateDir: string, name: string): LocalCloud {
  return localCloudFrom(loadCloudConfig(stateDir, name));
}

/** The embedded cloud a configuration describes (its worker opens it through providers/registry.ts). */
export function localCloudFrom(config: LocalCloudConfig): LocalCloud {
  const { name } = config;
  return {
    name,
    config,
    controlPlane: new LocalControlPlane(config),
    runtime: new RuncRuntime({
      stateRoot: path.join(config.dir, 'runc'),
      bundlesDir: path.join(config.dir, 'containers'),
      criuPath: config.criuPath,
      cgroupPrefix: `/${config.testbedId}/${config.name}`,
      // Each port is a namespace behind the cloud's edge (LocalControlPlane.ensurePort).
      netnsOf: (container) => `/run/netns/${names.containerNetns(config, container)}`,
    }),
    workDir: path.join(config.dir, 'migrations'),
    memoryDir: memoryDirOf(config),
    stateDir: config.dir,
    volumesDir: path.join(config.dir, 'volumes'),
    transferKeyFor: (peer) => (peer && config.transferKeys?.[peer]) || config.transferKeyPath,
  };
}

/** The cloud's share of /dev/shm (a tmpfs on every Linux host), removed with its testbed. */
export function memoryDirOf(config: { testbedId: string; name: string }): string {
  return path.join('/dev/shm/migravi', `${config.testbedId}-${config.name}`);
}
