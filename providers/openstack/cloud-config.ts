/**
 * How one OpenStack cloud is reached and where its containers run: the connection (Keystone,
 * region, credentials: one project is one cloud), the external network its floating IPs come
 * from, the Nova server that stands for the host, and that host's edge, which realises what
 * Neutron records (the embedded cloud's machinery, acting as the L2/L3 agent).
 */
import { z } from 'zod';
import { problemsOf } from '../../lib/schema-problems';
import { parseCidr } from '../../lib/vi-spec';
import type { LocalCloudConfig } from '../local/cloud-config';
import { openStackConnectionSchema, type OpenStackConnectionConfig } from './api';

export interface OpenStackCloudConfig {
  provider: 'openstack';
  name: string;
  connection: OpenStackConnectionConfig;
  externalNetwork: string;
  /** The external subnet's floating IPs as one CIDR: the host's edge answers for these. */
  floatingRange: string;
  /** The Nova server that stands for the host; it holds the records of the containers it runs. */
  hostServer: { name: string; flavor: string; image: string };
  host: LocalCloudConfig;
}

const cidr = z.string().refine((v) => parseCidr(v) !== undefined, 'expected an IPv4 CIDR such as 203.0.113.64/27');

export const openStackCloudSchema = z.strictObject({
  provider: z.literal('openstack'),
  name: z.string().min(1),
  connection: openStackConnectionSchema,
  externalNetwork: z.string().min(1),
  floatingRange: cidr,
  hostServer: z.strictObject({ name: z.string().min(1), flavor: z.string().min(1), image: z.string().min(1) }),
  // Written by the testbed that brought the host's edge up (providers/local/testbed.ts).
  host: z.looseObject({ name: z.string().min(1), netns: z.string().min(1), publicIp: z.string().min(1), dir: z.string().min(1) }),
});

/** The configuration checked once, at the edge: each problem names its field. */
export function parseOpenStackCloudConfig(raw: unknown): OpenStackCloudConfig {
  const parsed = openStackCloudSchema.safeParse(raw);
  if (!parsed.success) throw new Error(`OpenStack cloud configuration: ${problemsOf(parsed.error, 'configuration').join('; ')}`);
  return parsed.data as unknown as OpenStackCloudConfig;
}
