/**
 * Which code opens a cloud: its configuration names its provider. The cloud worker opens its
 * cloud here and knows no provider by name; a new provider is one more entry,
 * with the activities untouched (they see only providers/provider.ts): OpenStack is the second.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { problemsOf } from '../lib/schema-problems';
import type { LocalCloudConfig } from './local/cloud-config';
import type { Cloud } from './provider';

/**
 * Each provider reads the rest of the configuration itself (its fields are its own), and is
 * loaded only when a cloud of its kind is opened (a worker of an embedded cloud never loads
 * another provider's code or its dependencies).
 */
const PROVIDERS: Record<string, (config: Record<string, unknown>) => Promise<Cloud>> = {
  // The embedded cloud's configuration is written by its testbed (providers/local/testbed.ts).
  local: async (config) => (await import('./local/local-cloud')).localCloudFrom(config as unknown as LocalCloudConfig),
  // An OpenStack project, its host's edge written by the testbed (providers/openstack/cloud-config.ts).
  openstack: async (config) => (await import('./openstack/openstack-cloud')).openStackCloudFrom(config),
};

const configHead = z.looseObject({
  // Configurations written before the field existed are of embedded clouds.
  provider: z.string().default('local'),
  name: z.string().min(1),
});

/** Opens the cloud a configuration file describes; a missing file, a bad field or an unknown provider is said plainly. */
export async function openCloud(configFile: string): Promise<Cloud> {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(configFile, 'utf8'));
  } catch (err) {
    throw new Error(`cannot read the cloud configuration ${configFile}: ${(err as Error).message}`);
  }
  const head = configHead.safeParse(raw);
  if (!head.success) throw new Error(`cloud configuration ${configFile}: ${problemsOf(head.error, 'configuration').join('; ')}`);
  const open = PROVIDERS[head.data.provider];
  if (!open) throw new Error(`cloud configuration ${configFile}: provider "${head.data.provider}" is not one this release has (${Object.keys(PROVIDERS).join(', ')})`);
  return open(head.data);
}
