/**
 * Empties a development OpenStack project of what a test made in it. The development cloud's
 * database outlives a test run (a second `up` takes seconds because of it), so a run that died
 * half-way leaves its objects behind; each test empties its project before it starts and after it
 * ends, through the APIs, so that what it then counts is its own.
 */
import type { OpenStackConnection } from '../../providers/openstack/api';

export async function emptyProject(api: OpenStackConnection, opts: { serverPrefix?: string; zoneSuffix?: string } = {}): Promise<void> {
  const own = api.session.projectId;
  const { neutron, nova, designate } = api;
  if (opts.zoneSuffix) {
    for (const zone of await designate.listZones()) {
      if (!zone.name.endsWith(opts.zoneSuffix)) continue;
      await designate.deleteZone(zone.id, { ifExists: true });
      await designate.waitForZoneDeleted(zone.id);
    }
  }
  for (const fip of await neutron.listFloatingIps()) if (fip.project_id === own) await neutron.deleteFloatingIp(fip.id, { ifExists: true });
  for (const router of await neutron.listRouters()) {
    if (router.project_id !== own) continue;
    for (const port of await neutron.listPorts({ device_id: router.id })) {
      if (port.device_owner !== 'network:router_interface') continue;
      for (const fixed of port.fixed_ips) await neutron.removeRouterInterface(router.id, fixed.subnet_id, { ifExists: true });
    }
    await neutron.deleteRouter(router.id, { ifExists: true });
  }
  for (const port of await neutron.listPorts()) if (port.project_id === own) await neutron.deletePort(port.id, { ifExists: true });
  for (const network of await neutron.listNetworks()) if (network.project_id === own) await neutron.deleteNetwork(network.id, { ifExists: true });
  for (const group of await neutron.listSecurityGroups()) {
    if (group.project_id === own && group.name !== 'default') await neutron.deleteSecurityGroup(group.id, { ifExists: true, retryOnConflict: true });
  }
  if (opts.serverPrefix) {
    for (const server of await nova.listServers()) {
      if (!server.name.startsWith(opts.serverPrefix)) continue;
      await nova.deleteServer(server.id, { ifExists: true });
      await nova.waitForServerDeleted(server.id);
    }
  }
}
