import type { Cloud } from '../provider';
import { localCloudFrom } from '../local/local-cloud';
import { connectOpenStack } from './api';
import { parseOpenStackCloudConfig } from './cloud-config';
import { OpenStackControlPlane } from './control-plane';

/**
 * An OpenStack cloud as its worker opens it (providers/registry.ts): the control plane speaks to
 * the project's APIs (authenticated here: bad credentials fail at start-up, not mid-migration),
 * the host runs containers with the same runc + CRIU runtime as every cloud, and its edge
 * realises Neutron's objects with floating IPs from the external network's range.
 */
export async function openStackCloudFrom(raw: Record<string, unknown>): Promise<Cloud> {
  const cfg = parseOpenStackCloudConfig(raw);
  const host = localCloudFrom({ ...cfg.host, provider: 'local', name: cfg.name, floatingRange: cfg.floatingRange, dns: undefined });
  const api = await connectOpenStack(cfg.connection);
  return { ...host, controlPlane: new OpenStackControlPlane(cfg, api, host.controlPlane) };
}
