/**
 * Makes clouds of a testbed into projects of the development OpenStack: each one's worker then
 * opens an OpenStack configuration (its project's credentials, the external network, the Nova
 * server standing for its host) whose host is the testbed cloud's edge. The APIs listen on the
 * host's loopback; a relay started here (and stopped with the testbed, by PID) carries them to the
 * host's end of the host link, the one host address the workers reach from their namespaces.
 */
import path from 'node:path';
import { writeFile } from 'node:fs/promises';
import { startService } from '../../../lib/processes';
import { registerProcess, setCloudConfig, type TestbedRecord } from '../../local/testbed';
import type { OpenStackCloudConfig } from '../cloud-config';
import type { DevCloudCredentials } from './cloud-resources';
import { PORTS } from './layout';
import { RELAY_READY } from '../../../lib/tcp-relay';

const RELAYED = [PORTS.keystone, PORTS.neutron, PORTS.nova, PORTS.designate, PORTS.glance];

/** The Nova server that stands for a testbed cloud's host. */
export const hostServerName = (record: TestbedRecord, cloud: string) => `migravi-host-${record.options.id}-${cloud}`;

/**
 * `projects`: testbed cloud → development project (a key of creds.clouds). Returns the record
 * with the new configurations; workers started from it open the projects.
 */
export async function attachDevProjects(record: TestbedRecord, creds: DevCloudCredentials, projects: Record<string, string>): Promise<TestbedRecord> {
  const problems = Object.entries(projects).flatMap(([cloud, project]) => [
    ...(record.clouds.some((c) => c.name === cloud) ? [] : [`no cloud ${cloud} in testbed ${record.options.id}`]),
    ...(creds.clouds[project] ? [] : [`no project ${project} in the development OpenStack (it has ${Object.keys(creds.clouds).join(', ')})`]),
  ]);
  if (problems.length) throw new Error(`cannot attach OpenStack projects: ${problems.join('; ')}`);
  const host = record.hostAddress;
  const relayPid = await startService({
    name: 'OpenStack API relay',
    argv: [process.execPath, path.join(__dirname, '..', '..', '..', 'lib', 'tcp-relay.js'), '--listen', host, '--ports', RELAYED.join(','), '--to', '127.0.0.1'],
    logFile: path.join(record.options.stateDir, 'openstack-relay.log'),
    readyLine: RELAY_READY,
  });
  await registerProcess(record.options.stateDir, 'OpenStack API relay', relayPid);
  let updated = record;
  for (const [cloud, project] of Object.entries(projects)) {
    const user = creds.clouds[project]!;
    const edge = record.clouds.find((c) => c.name === cloud)!;
    const config: OpenStackCloudConfig = {
      provider: 'openstack',
      name: cloud,
      connection: {
        authUrl: `http://${host}:${PORTS.keystone}/v3`,
        region: creds.region,
        auth: { username: user.username, password: user.password, userDomainName: user.userDomainName, projectName: user.projectName, projectDomainName: user.projectDomainName },
        // The catalog names the loopback, which is not the worker's: the relay's address instead.
        endpointOverride: {
          network: `http://${host}:${PORTS.neutron}`,
          compute: `http://${host}:${PORTS.nova}/v2.1`,
          dns: `http://${host}:${PORTS.designate}`,
          image: `http://${host}:${PORTS.glance}`,
        },
      },
      externalNetwork: creds.externalNetwork,
      floatingRange: creds.floatingRange,
      hostServer: { name: hostServerName(record, cloud), flavor: creds.flavor, image: creds.image },
      host: edge,
    };
    const file = path.join(edge.dir, 'openstack.json');
    await writeFile(file, JSON.stringify(config, null, 2), { mode: 0o600 }); // it holds a password
    updated = await setCloudConfig(record.options.stateDir, cloud, file);
  }
  return updated;
}
