/** The demo virtual infrastructure: a counter service and a web server (Debian's nginx), with clients, on a private network. */
import type { ContainerSpec, NetworkSpec } from '../lib/types';

export const demoNetwork: NetworkSpec = { name: 'vi-net', cidr: '192.0.2.0/24', vni: 4242, mtu: 1450 };

export const KV_PORT = 7000;

/** The VI's name: a plan may move it by this name (inventory finds its containers). */
export const DEMO_VI = 'demo';

/** The in-memory counter service (demo/kv-server.c) that the demo migrates. */
export function kvContainer(ballastMiB = 0): ContainerSpec {
  return {
    name: 'kv',
    vi: DEMO_VI,
    network: demoNetwork.name,
    ip: '192.0.2.10',
    mac: '02:00:c0:00:02:0a',
    args: ['/bin/kv-server', String(KV_PORT), String(ballastMiB)],
    readonlyRootfs: true,
    ingress: [{ port: KV_PORT, protocol: 'tcp', from: demoNetwork.cidr }],
  };
}

export const WEB_PORT = 80;

/** Debian's nginx (rootfs built by setup), master as root, worker as www-data. */
export const webContainer: ContainerSpec = {
  name: 'web',
  vi: DEMO_VI,
  network: demoNetwork.name,
  ip: '192.0.2.20',
  mac: '02:00:c0:00:02:14',
  args: ['/usr/sbin/nginx'],
  readonlyRootfs: true,
  // Only the demo's clients may reach it (enforced by the cloud it runs in, wherever that is).
  ingress: [{ port: WEB_PORT, protocol: 'tcp', from: '192.0.2.100/32' }],
};

/** The client's place on the private network: a port without a container, the client runs in it. */
export const clientPort: ContainerSpec = {
  name: 'client',
  network: demoNetwork.name,
  ip: '192.0.2.100',
  mac: '02:00:c0:00:02:64',
  args: [],
  readonlyRootfs: true,
};
