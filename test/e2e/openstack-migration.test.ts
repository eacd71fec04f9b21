/**
 * A live migration between two projects of the development OpenStack, the seed paper's own case.
 * Each testbed cloud's worker opens its project (Neutron, Nova, Designate through the APIs) and
 * realises what they hold on its host edge. Checked afterwards through the APIs — the destination
 * project holds the same network, addresses, MACs and rules, the name in Designate (asked of
 * designate-mdns) points at the destination's floating IP, the source project keeps nothing of the
 * VI — and in the runtimes: the containers run at the destination only, the private client and a
 * user outside keep their connections, the service's memory is intact.
 */
import assert from 'node:assert/strict';
import { Resolver } from 'node:dns/promises';
import { queryProgress, startMigration } from '../../client/migravi-client';
import type { ClientStatus } from '../../demo/client';
import { clientPort, loadDemoVi } from '../../demo/demo-vi';
import { getFromOutside, resolveFromOutside, startDemoClient, type DemoClient } from '../../demo/scenario';
import { waitFor } from '../../lib/processes';
import type { MigrationReport } from '../../lib/types';
import type { ViSpec } from '../../lib/vi-spec';
import type { TestbedRecord } from '../../providers/local/testbed';
import { connectOpenStack, type OpenStackConnection } from '../../providers/openstack/api';
import type { DevCloudCredentials } from '../../providers/openstack/dev-cloud/cloud-resources';
import { PORTS } from '../../providers/openstack/dev-cloud/layout';
import { attachDevProjects } from '../../providers/openstack/dev-cloud/testbed-projects';
import { openCloud } from '../../providers/registry';
import { devOpenStack } from './dev-openstack';
import { emptyProject } from './openstack-project';
import { E2eStack } from './stack';

const ID = 'mvosm';
const ZONE = `${ID}.cloud-a.example.`;
const NAME = `www.${ZONE}`;
const PROJECTS = { 'cloud-a': 'cloud-a', 'cloud-b': 'cloud-b' };
const VI_PORTS = ['kv/eth0', 'web/eth0'];

/** What Neutron says of a port: its address, MAC and ingress rules, as comparable values. */
async function portView(api: OpenStackConnection, name: string): Promise<{ ip: string; mac: string; rules: string[] } | undefined> {
  const [port] = await api.neutron.listPorts({ name });
  if (!port) return undefined;
  const rules = (await Promise.all(port.security_groups.map((g) => api.neutron.listSecurityGroupRules(g))))
    .flat()
    .filter((r) => r.direction === 'ingress')
    .map((r) => `${r.protocol ?? 'any'} ${r.port_range_min ?? ''}-${r.port_range_max ?? ''} from ${r.remote_ip_prefix ?? r.remote_group_id ?? 'any'}`)
    .sort();
  return { ip: port.fixed_ips[0]!.ip_address, mac: port.mac_address, rules };
}

async function resolveInDesignate(name: string): Promise<string[]> {
  const resolver = new Resolver({ timeout: 2_000, tries: 2 });
  resolver.setServers([`127.0.0.1:${PORTS.designateMdns}`]);
  return (await resolver.resolve4(name).catch(() => [] as string[])).sort();
}

describe('OpenStack: a VI moves live between two projects of a real control plane', function () {
  this.timeout(600_000);
  let creds: DevCloudCredentials;
  let apiA: OpenStackConnection;
  let apiB: OpenStackConnection;
  let stack: E2eStack;
  let vi: ViSpec;
  let outside: DemoClient;
  let clientBefore: ClientStatus;
  let outsideBefore: ClientStatus;
  let outsideAtDrain: ClientStatus;
  let outsideAfter: ClientStatus;
  const portsBefore: Record<string, Awaited<ReturnType<typeof portView>>> = {};
  let addressBefore: string | undefined;
  let report: MigrationReport;

  const empty = async () => {
    for (const api of [apiA, apiB]) await emptyProject(api, { serverPrefix: `migravi-host-${ID}`, zoneSuffix: ZONE });
  };

  before(async () => {
    creds = await devOpenStack();
    const connect = (project: string) => {
      const user = creds.clouds[project]!;
      return connectOpenStack({ authUrl: creds.authUrl, region: creds.region, auth: { username: user.username, password: user.password, projectName: user.projectName } });
    };
    [apiA, apiB] = await Promise.all([connect('cloud-a'), connect('cloud-b')]);
    await empty();
    const zone = await apiA.designate.createZone({ name: ZONE, email: 'ops@cloud-a.example', ttl: 60 });
    await apiA.designate.waitForZone(zone.id, { timeoutMs: 120_000 });

    const demo = await loadDemoVi({ ballastMiB: 16, only: ['kv', 'web'] });
    vi = { ...demo, dns: { ...demo.dns!, zone: ZONE } };
    stack = await E2eStack.start({
      id: ID,
      ballastMiB: 16,
      wanGateway: '203.0.113.1', // the development OpenStack's external network
      prepare: (record) => attachDevProjects(record, creds, PROJECTS),
      vi: () => Promise.resolve(vi),
      // The private client's port is made in Neutron, as every port of project A is.
      plugClient: async (record: TestbedRecord) => {
        const { controlPlane } = await openCloud(record.cloudConfigs!['cloud-a']!);
        await controlPlane.ensurePort(clientPort);
        await controlPlane.setPortEnabled(clientPort.name, true);
      },
    });
    for (const name of VI_PORTS) portsBefore[name] = await portView(apiA, name);
    addressBefore = (await resolveInDesignate(NAME))[0];
    assert.ok(addressBefore, `${NAME} does not resolve in Designate before the move`);
    outside = await startDemoClient(stack.record, 'outside', { name: 'outside-user', ip: addressBefore, port: 80, protocol: 'http' });
    [clientBefore, outsideBefore] = await Promise.all([stack.client.waitForReplies(50), outside.waitForReplies(50)]);
    const handle = await startMigration(stack.temporal, { name: `${ID}-ab`, vi: vi.name, source: 'cloud-a', destination: 'cloud-b', options: { drainTimeoutSeconds: 3 } });
    await waitFor('the migration to drain', async () => {
      const progress = await queryProgress(handle);
      return progress.phase === 'drain' || progress.state === 'completed';
    }, 120_000, 100);
    outsideAtDrain = await outside.status();
    report = await handle.result();
    outsideAfter = await outside.status();
  });

  after(async function () {
    const unhappy = this.test?.parent?.tests.some((t) => t.state !== 'passed') ?? true;
    await stack?.stop(unhappy);
    if (apiA && apiB) await empty().catch((err: unknown) => console.log(`      cleanup: ${(err as Error).message}`));
  });

  it('recreated the network and every port in project B with the same address, MAC and rules', async () => {
    const [network] = await apiB.neutron.listNetworks({ name: 'vi-net' });
    assert.ok(network, 'project B has no vi-net');
    assert.deepEqual((await apiB.neutron.listSubnets({ network_id: network.id })).map((s) => s.cidr), ['192.0.2.0/24']);
    for (const name of VI_PORTS) {
      assert.ok(portsBefore[name], `project A had no port ${name} before the move`);
      assert.deepEqual(await portView(apiB, name), portsBefore[name], `project B's ${name} differs from project A's`);
    }
    assert.ok(portsBefore['web/eth0']!.rules.includes('tcp 80-80 from 203.0.113.0/24'), `web's rules: ${portsBefore['web/eth0']!.rules.join('; ')}`);
  });

  it('gave web a floating IP in project B, and Designate\'s name points at it', async () => {
    const [port] = await apiB.neutron.listPorts({ name: 'web/eth0' });
    const fips = await apiB.neutron.listFloatingIps({ port_id: port!.id });
    assert.equal(fips.length, 1, `project B's floating IPs of web: ${fips.map((f) => f.floating_ip_address).join(', ')}`);
    const address = fips[0]!.floating_ip_address;
    assert.notEqual(address, addressBefore);
    assert.deepEqual(await resolveInDesignate(NAME), [address]);
    assert.equal(report.containers.find((c) => c.name === 'web')?.floatingIp?.destination, address);
  });

  it('left nothing of the VI in project A', async () => {
    for (const name of VI_PORTS) assert.deepEqual(await apiA.neutron.listPorts({ name }), [], `project A still has ${name}`);
    const ownFips = (await apiA.neutron.listFloatingIps()).filter((f) => f.project_id === apiA.session.projectId);
    assert.deepEqual(ownFips.map((f) => f.floating_ip_address), [], 'project A still holds a floating IP');
    const groups = (await apiA.neutron.listSecurityGroups()).filter((g) => g.project_id === apiA.session.projectId && /kv|web/.test(g.name));
    assert.deepEqual(groups.map((g) => g.name), [], 'project A still has the VI\'s security groups');
  });

  it('runs the containers in cloud-b only, their memory intact, with both connections kept', async () => {
    for (const container of ['kv', 'web']) {
      const placement = await stack.placement(container);
      assert.equal(placement['cloud-b'], 'running', `${container}: ${JSON.stringify(placement)}`);
      assert.notEqual(placement['cloud-a'], 'running', `${container} still runs in cloud-a`);
    }
    assert.equal(await stack.kvSelfCheck(), 'OK 16');
    await stack.assertConnectionKept(clientBefore);
    // The outside user's connection went on through the old address until the drain closed it.
    assert.equal(outsideAfter.localPort, outsideBefore.localPort, 'the outside user is on another connection');
    assert.equal(outsideAfter.discontinuities, 0, 'the outside user saw a request number out of sequence');
    assert.ok(outsideAfter.replies > outsideAtDrain.replies, `no reply reached the outside user during the drain (${outsideAtDrain.replies} → ${outsideAfter.replies})`);
    const web = report.containers.find((c) => c.name === 'web')!;
    assert.equal(web.drain?.connections, 1, 'the drain did not see the outside user\'s connection');
  });

  it('rolls back a move whose restore fails in project A, leaving that project as it was', async () => {
    const clientNow = await stack.client.waitForReplies(20);
    const nameNow = await resolveInDesignate(NAME);
    await stack.setFaults([{ process: 'cloud-a', at: 'restore:before-criu', action: 'fail' }]);
    let failure = '';
    try {
      await (await startMigration(stack.temporal, { name: `${ID}-ba`, vi: vi.name, source: 'cloud-b', destination: 'cloud-a' })).result();
    } catch (err) {
      for (let e = err as Error | undefined; e; e = e.cause as Error | undefined) failure += `${e.message}\n`;
    } finally {
      await stack.setFaults([]);
    }
    assert.match(failure, /rolled back/, `the move did not roll back:\n${failure}`);
    assert.match(failure, /injected fault \S+: fail at restore:before-criu in cloud-a/, `the move did not fail at the restore in cloud-a:\n${failure}`);
    for (const name of VI_PORTS) assert.deepEqual(await apiA.neutron.listPorts({ name }), [], `project A kept ${name} of the rolled-back move`);
    const ownFips = (await apiA.neutron.listFloatingIps()).filter((f) => f.project_id === apiA.session.projectId);
    assert.deepEqual(ownFips.map((f) => f.floating_ip_address), [], 'project A kept a floating IP of the rolled-back move');
    const groups = (await apiA.neutron.listSecurityGroups()).filter((g) => g.project_id === apiA.session.projectId && /kv|web/.test(g.name));
    assert.deepEqual(groups.map((g) => g.name), [], 'project A kept security groups of the rolled-back move');
    assert.deepEqual(await resolveInDesignate(NAME), nameNow, 'the name moved');
    assert.equal((await stack.placement('web'))['cloud-b'], 'running');
    assert.equal(await stack.kvSelfCheck(), 'OK 16');
    await stack.assertConnectionKept(clientNow);
  });
});

describe('OpenStack: a VI moves live from an embedded cloud into a project and back (a heterogeneous pair)', function () {
  this.timeout(600_000);
  const HET = 'mvhet';
  let apiB: OpenStackConnection;
  let stack: E2eStack;
  let vi: ViSpec;
  const empty = () => emptyProject(apiB, { serverPrefix: `migravi-host-${HET}` });

  before(async () => {
    const creds = await devOpenStack();
    const user = creds.clouds['cloud-b']!;
    apiB = await connectOpenStack({ authUrl: creds.authUrl, region: creds.region, auth: { username: user.username, password: user.password, projectName: user.projectName } });
    await empty();
    vi = await loadDemoVi({ ballastMiB: 16, only: ['kv', 'web'] });
    stack = await E2eStack.start({
      id: HET,
      ballastMiB: 16,
      wanGateway: '203.0.113.1',
      prepare: (record) => attachDevProjects(record, creds, { 'cloud-b': 'cloud-b' }), // cloud-a stays embedded
      vi: () => Promise.resolve(vi),
    });
  });

  after(async function () {
    const unhappy = this.test?.parent?.tests.some((t) => t.state !== 'passed') ?? true;
    await stack?.stop(unhappy);
    if (apiB) await empty().catch((err: unknown) => console.log(`      cleanup: ${(err as Error).message}`));
  });

  it('moves into the project: Neutron holds the VI\'s addresses, MACs and a floating IP the name points at', async () => {
    const clientBefore = await stack.client.waitForReplies(20);
    const report = await (await startMigration(stack.temporal, { name: `${HET}-ab`, vi: vi.name, source: 'cloud-a', destination: 'cloud-b', options: { drainTimeoutSeconds: 1 } })).result();
    for (const container of vi.containers) {
      const [port] = await apiB.neutron.listPorts({ name: `${container.name}/eth0` });
      assert.ok(port, `project B has no port for ${container.name}`);
      assert.deepEqual([port.fixed_ips[0]?.ip_address, port.mac_address], [container.networks[0]!.ip, container.networks[0]!.mac], `${container.name}'s port in Neutron`);
      assert.equal((await stack.placement(container.name))['cloud-b'], 'running', `${container.name} does not run in cloud-b`);
      assert.notEqual((await stack.placement(container.name))['cloud-a'], 'running', `${container.name} still runs in cloud-a`);
    }
    const [webPort] = await apiB.neutron.listPorts({ name: 'web/eth0' });
    const fips = await apiB.neutron.listFloatingIps({ port_id: webPort!.id });
    assert.deepEqual(fips.map((f) => f.floating_ip_address), [report.containers.find((c) => c.name === 'web')?.floatingIp?.destination]);
    assert.deepEqual(await resolveFromOutside(stack.record, 'www.vi.example.'), [fips[0]!.floating_ip_address], 'the embedded cloud\'s DNS does not point at the project\'s floating IP');
    assert.equal(await getFromOutside(stack.record, fips[0]!.floating_ip_address), '1\n', 'the project\'s floating IP does not serve web');
    assert.equal(await stack.kvSelfCheck(), 'OK 16');
    await stack.assertConnectionKept(clientBefore);
  });

  it('moves back out: the project keeps nothing (no port, network, router, floating IP or group of the VI)', async () => {
    const clientBefore = await stack.client.waitForReplies(20);
    await (await startMigration(stack.temporal, { name: `${HET}-ba`, vi: vi.name, source: 'cloud-b', destination: 'cloud-a', options: { drainTimeoutSeconds: 1 } })).result();
    const own = apiB.session.projectId;
    const left = [
      ...(await apiB.neutron.listPorts()).filter((p) => p.project_id === own).map((p) => `port ${p.name || p.device_owner}`),
      ...(await apiB.neutron.listNetworks()).filter((n) => n.project_id === own).map((n) => `network ${n.name}`),
      ...(await apiB.neutron.listRouters()).filter((r) => r.project_id === own).map((r) => `router ${r.name}`),
      ...(await apiB.neutron.listFloatingIps()).filter((f) => f.project_id === own).map((f) => `floating IP ${f.floating_ip_address}`),
      ...(await apiB.neutron.listSecurityGroups()).filter((g) => g.project_id === own && g.name !== 'default').map((g) => `security group ${g.name}`),
    ];
    assert.deepEqual(left, [], 'project B kept part of the VI');
    for (const container of vi.containers) assert.equal((await stack.placement(container.name))['cloud-a'], 'running', `${container.name} does not run in cloud-a`);
    assert.equal(await stack.kvSelfCheck(), 'OK 16');
    await stack.assertConnectionKept(clientBefore);
  });
});
