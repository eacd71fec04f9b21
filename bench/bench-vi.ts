/**
 * The benchmark's workloads, described as any user's VI: N copies of the counter service
 * (demo/kv-server.c) on one private network, each holding a given amount of touched memory, and
 * a probe port on the same network (not part of the VI) where the probing clients run.
 */
import { demoRootfs } from '../lib/paths';
import type { ContainerSpec } from '../lib/types';
import { parseViSpec, type ViSpec } from '../lib/vi-spec';
import type { ClientTarget } from '../demo/scenario';

export const BENCH_VI = 'bench';
const NETWORK = 'bench-net';
const PORT = 7000;

export function memberName(i: number): string {
  return `c${i + 1}`;
}

export function memberIp(i: number): string {
  return `10.77.0.${10 + i}`;
}

/** A VI of `members` counter services with `ballastMiB` of touched memory each. */
export function benchVi(members: number, ballastMiB: number): ViSpec {
  return parseViSpec({
    name: BENCH_VI,
    networks: [{ name: NETWORK, cidr: '10.77.0.0/24', mtu: 1390, ingress: [{ port: PORT, from: '10.77.0.0/24' }] }],
    containers: Array.from({ length: members }, (_, i) => ({
      name: memberName(i),
      rootfs: demoRootfs,
      command: ['/bin/kv-server', String(PORT), String(ballastMiB)],
      readonlyRootfs: true,
      networks: [{ network: NETWORK, ip: memberIp(i), mac: `02:00:0a:4d:00:${(10 + i).toString(16).padStart(2, '0')}` }],
    })),
  });
}

/** Where the probes run: a port on the VI's network, without a container. */
export const probePort: ContainerSpec = {
  name: 'probe',
  interfaces: [{ network: NETWORK, ip: '10.77.0.200', mac: '02:00:0a:4d:00:c8' }],
  args: [],
  readonlyRootfs: true,
};

/** The probe of one member in one run: one connection, INCR every 10 ms. */
export function probeTarget(i: number, run: string): ClientTarget {
  return { name: `probe-${run}-${memberName(i)}`, ip: memberIp(i), port: PORT, protocol: 'kv' };
}
