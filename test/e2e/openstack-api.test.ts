/**
 * The OpenStack client against a real OpenStack control plane (the development OpenStack:
 * Keystone, Neutron, Nova with the fake driver, Designate, from Debian's packages). What the
 * client reports is checked against observers of its own: Neutron's rows read from MariaDB,
 * designate-mdns answering DNS queries, the kernel's table of listening sockets.
 */
import assert from 'node:assert/strict';
import { Resolver } from 'node:dns/promises';
import { run } from '../../lib/exec';
import { isAlive } from '../../lib/processes';
import { connectOpenStack, isQuotaError, OpenStackAuthError, OpenStackConfigError, type OpenStackConnection } from '../../providers/openstack/api';
import { OpenStackHttp } from '../../providers/openstack/api/http';
import type { DevCloudCredentials, DevCloudUser } from '../../providers/openstack/dev-cloud/cloud-resources';
import { devCloudStatus, devCloudUp } from '../../providers/openstack/dev-cloud/dev-cloud';
import { devCloudLayout, PORTS } from '../../providers/openstack/dev-cloud/layout';
import { devOpenStack } from './dev-openstack';

const RUN = `t${process.pid}`;

const asUser = (c: DevCloudCredentials, u: DevCloudUser) =>
  connectOpenStack({ authUrl: c.authUrl, region: c.region, auth: { username: u.username, password: u.password, projectName: u.projectName } });

/** Neutron's own rows, read from its database: what Neutron recorded, whatever its API or our client say. */
async function neutronDb(sql: string): Promise<string[][]> {
  const out = await run('mariadb', ['--no-defaults', '-S', devCloudLayout().mysqlSocket, '-uroot', '-N', '-B', 'neutron', '-e', sql]);
  return out.stdout.trim().split('\n').filter(Boolean).map((line) => line.split('\t'));
}

function mdns(): Resolver {
  const resolver = new Resolver({ timeout: 2_000, tries: 2 });
  resolver.setServers([`127.0.0.1:${PORTS.designateMdns}`]);
  return resolver;
}

describe('OpenStack client against the development OpenStack', function () {
  this.timeout(600_000);
  let creds: DevCloudCredentials;
  let a: OpenStackConnection;
  let b: OpenStackConnection;
  let admin: OpenStackConnection;
  const cleanups: Array<() => Promise<unknown>> = [];

  before(async () => {
    creds = await devOpenStack();
    a = await asUser(creds, creds.clouds['cloud-a']!);
    b = await asUser(creds, creds.clouds['cloud-b']!);
    admin = await asUser(creds, creds.admin);
  });

  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch((err: unknown) => console.log(`      cleanup: ${(err as Error).message}`));
  });

  it('runs every service, listening on loopback only; a second up starts nothing', async () => {
    const status = devCloudStatus();
    const down = status.processes.filter((p) => !p.running);
    assert.deepEqual(down.map((p) => p.name), [], `not running: ${down.map((p) => `${p.name} (log ${p.log})`).join(', ')}`);
    const pids = status.processes.map((p) => p.pid!);
    // The kernel's sockets: every TCP listener of the control plane's process groups is on loopback.
    const listeners = (await run('ss', ['-Hltnp'])).stdout.split('\n').filter(Boolean);
    const groupOf = async (pid: number) => Number((await run('ps', ['-o', 'pgid=', '-p', String(pid)], { allowFailure: true })).stdout.trim());
    const ours: string[] = [];
    for (const line of listeners) {
      const owners = [...line.matchAll(/pid=(\d+)/g)].map((m) => Number(m[1]));
      for (const pid of owners) if (pids.includes(await groupOf(pid))) ours.push(line.split(/\s+/)[3]!);
    }
    assert.ok(ours.length >= 10, `found only ${ours.length} listening sockets of the control plane: ${ours.join(', ')}`);
    assert.deepEqual(ours.filter((addr) => !addr.startsWith('127.0.0.1:') && !addr.startsWith('[::1]:')), [], 'a service listens beyond loopback');
    await devCloudUp();
    const again = devCloudStatus().processes.map((p) => p.pid);
    assert.deepEqual(again, pids, 'a second up restarted a process');
    assert.ok(pids.every((pid) => isAlive(pid)));
  });

  it('gives each project its own token, by password and by application credential', async () => {
    assert.equal(a.session.projectId, creds.clouds['cloud-a']!.projectId);
    assert.equal(b.session.projectId, creds.clouds['cloud-b']!.projectId);
    const keystone = new OpenStackHttp({ service: 'keystone', endpoint: async () => a.session.authUrl, tokens: a.session });
    const created = await keystone.post<{ application_credential: { id: string; secret: string } }>(`/users/${a.session.userId}/application_credentials`, { application_credential: { name: `${RUN}-appcred` } });
    const credential = created.application_credential;
    cleanups.push(() => keystone.delete(`/users/${a.session.userId}/application_credentials/${credential.id}`, { ifExists: true }));
    const byCredential = await connectOpenStack({ authUrl: creds.authUrl, region: creds.region, auth: { applicationCredentialId: credential.id, applicationCredentialSecret: credential.secret } });
    assert.equal(byCredential.session.projectId, creds.clouds['cloud-a']!.projectId);
    assert.ok(Array.isArray(await byCredential.neutron.listNetworks()));
  });

  it('says plainly what is wrong: bad credentials, a missing endpoint, a bad configuration', async () => {
    const user = creds.clouds['cloud-a']!;
    const wrong = `${user.password}-wrong`;
    const err = await connectOpenStack({ authUrl: creds.authUrl, region: creds.region, auth: { username: user.username, password: wrong, projectName: user.projectName } }).then(() => undefined, (e: unknown) => e);
    assert.ok(err instanceof OpenStackAuthError, `expected an authentication error, got ${String(err)}`);
    assert.match(err.message, new RegExp(`${user.username}.*${user.projectName}`));
    assert.ok(!err.message.includes(wrong), 'the message quotes the password');
    const elsewhere = await connectOpenStack({ authUrl: creds.authUrl, region: 'RegionTwo', auth: { username: user.username, password: user.password, projectName: user.projectName } });
    const missing = await elsewhere.neutron.listNetworks().then(() => undefined, (e: unknown) => e as Error);
    assert.match(missing?.message ?? '', /network.*RegionTwo/);
    assert.match(missing?.message ?? '', /RegionOne/, 'the message does not say what the catalog has');
    const bad = await connectOpenStack({ region: creds.region, auth: { username: 'x', password: 'y', projectName: 'z' } } as never).then(() => undefined, (e: unknown) => e);
    assert.ok(bad instanceof OpenStackConfigError && /authUrl/.test(bad.message), String(bad));
  });

  it('keeps a VI network in two projects: same CIDR, same addresses and MACs, security rules, ports created unplugged', async () => {
    const mac = '02:5a:00:00:00:0a';
    const ids: Record<string, { network: string; port: string; group: string }> = {};
    for (const [name, cloud] of [['cloud-a', a], ['cloud-b', b]] as const) {
      const network = await cloud.neutron.createNetwork({ name: `${RUN}-vi-net` });
      cleanups.push(() => cloud.neutron.deleteNetwork(network.id, { ifExists: true, retryOnConflict: true }));
      const subnet = await cloud.neutron.createSubnet({ network_id: network.id, name: `${RUN}-vi-subnet`, cidr: '10.77.0.0/24', gateway_ip: '10.77.0.1' });
      const group = await cloud.neutron.createSecurityGroup({ name: `${RUN}-web` });
      cleanups.push(() => cloud.neutron.deleteSecurityGroup(group.id, { ifExists: true, retryOnConflict: true }));
      await cloud.neutron.createSecurityGroupRule({ security_group_id: group.id, protocol: 'tcp', port_range_min: 80, port_range_max: 80, remote_ip_prefix: '0.0.0.0/0' });
      const port = await cloud.neutron.createPort({ network_id: network.id, name: `${RUN}-web`, fixed_ips: [{ subnet_id: subnet.id, ip_address: '10.77.0.10' }], mac_address: mac, security_groups: [group.id], admin_state_up: false });
      cleanups.push(() => cloud.neutron.deletePort(port.id, { ifExists: true }));
      ids[name] = { network: network.id, port: port.id, group: group.id };
    }
    for (const name of ['cloud-a', 'cloud-b']) {
      const { port, group, network } = ids[name]!;
      const [row] = await neutronDb(`SELECT p.mac_address, a.ip_address, p.admin_state_up, p.project_id FROM ports p JOIN ipallocations a ON a.port_id = p.id WHERE p.id = '${port}'`);
      assert.deepEqual(row, [mac, '10.77.0.10', '0', creds.clouds[name]!.projectId], `Neutron's row of ${name}'s port`);
      const rules = await neutronDb(`SELECT protocol, port_range_min, port_range_max, remote_ip_prefix FROM securitygrouprules WHERE security_group_id = '${group}' AND direction = 'ingress'`);
      assert.deepEqual(rules, [['tcp', '80', '80', '0.0.0.0/0']]);
      const [cidr] = await neutronDb(`SELECT cidr FROM subnets WHERE network_id = '${network}'`);
      assert.deepEqual(cidr, ['10.77.0.0/24']);
    }
  });

  it('boots a server on a port (fake virt driver): Neutron binds the port to the compute host', async () => {
    const network = await a.neutron.createNetwork({ name: `${RUN}-host-net` });
    cleanups.push(() => a.neutron.deleteNetwork(network.id, { ifExists: true, retryOnConflict: true }));
    const subnet = await a.neutron.createSubnet({ network_id: network.id, cidr: '10.78.0.0/24' });
    const port = await a.neutron.createPort({ network_id: network.id, name: `${RUN}-host-port`, fixed_ips: [{ subnet_id: subnet.id, ip_address: '10.78.0.5' }] });
    cleanups.push(() => a.neutron.deletePort(port.id, { ifExists: true }));
    const flavor = (await a.nova.listFlavors()).find((f) => f.name === creds.flavor)!;
    const images = await new OpenStackHttp({ service: 'nova', endpoint: () => a.session.endpointFor('image', { region: creds.region }), tokens: a.session }).get<{ images: Array<{ id: string; name: string }> }>('/v2/images');
    const image = images.images.find((i) => i.name === creds.image)!;
    const server = await a.nova.createServer({ name: `${RUN}-host`, imageRef: image.id, flavorRef: flavor.id, networks: [{ port: port.id }] });
    cleanups.push(async () => {
      await a.nova.deleteServer(server.id, { ifExists: true });
      await a.nova.waitForServerDeleted(server.id);
    });
    const active = await a.nova.waitForServer(server.id, 'ACTIVE', { timeoutMs: 180_000 });
    assert.equal(active.status, 'ACTIVE');
    const [binding] = await neutronDb(`SELECT b.host, b.vif_type, p.device_id FROM ml2_port_bindings b JOIN ports p ON p.id = b.port_id WHERE b.port_id = '${port.id}' AND b.status = 'ACTIVE'`);
    assert.deepEqual(binding, [creds.computeHost, 'other', server.id], 'the port is not bound to the server on the compute host');
  });

  it('associates a floating IP and points a Designate name at it; designate-mdns answers with each new address', async () => {
    const external = (await a.neutron.listNetworks({ name: creds.externalNetwork }))[0]!;
    const network = await a.neutron.createNetwork({ name: `${RUN}-fip-net` });
    cleanups.push(() => a.neutron.deleteNetwork(network.id, { ifExists: true, retryOnConflict: true }));
    const subnet = await a.neutron.createSubnet({ network_id: network.id, cidr: '10.79.0.0/24', gateway_ip: '10.79.0.1' });
    const router = await a.neutron.createRouter({ name: `${RUN}-router`, external_gateway_info: { network_id: external.id } });
    cleanups.push(() => a.neutron.deleteRouter(router.id, { ifExists: true, retryOnConflict: true }));
    await a.neutron.addRouterInterface(router.id, subnet.id);
    cleanups.push(() => a.neutron.removeRouterInterface(router.id, subnet.id, { ifExists: true }));
    const port = await a.neutron.createPort({ network_id: network.id, name: `${RUN}-web-fip`, fixed_ips: [{ subnet_id: subnet.id, ip_address: '10.79.0.10' }] });
    cleanups.push(() => a.neutron.deletePort(port.id, { ifExists: true }));
    const fip = await a.neutron.createFloatingIp({ floating_network_id: external.id });
    cleanups.push(() => a.neutron.deleteFloatingIp(fip.id, { ifExists: true }));
    await a.neutron.associateFloatingIp(fip.id, { port_id: port.id });
    const [row] = await neutronDb(`SELECT floating_ip_address, fixed_ip_address, fixed_port_id FROM floatingips WHERE id = '${fip.id}'`);
    assert.deepEqual(row, [fip.floating_ip_address, '10.79.0.10', port.id]);

    const zoneName = `${RUN}.cloud-a.example.`;
    const zone = await a.designate.createZone({ name: zoneName, email: 'ops@cloud-a.example', ttl: 60 });
    cleanups.push(async () => {
      await a.designate.deleteZone(zone.id, { ifExists: true });
      await a.designate.waitForZoneDeleted(zone.id);
    });
    await a.designate.waitForZone(zone.id, { timeoutMs: 120_000 });
    const record = await a.designate.createRecordset(zone.id, { name: `web.${zoneName}`, type: 'A', records: [fip.floating_ip_address], ttl: 60 });
    await a.designate.waitForRecordset(zone.id, record.id, { timeoutMs: 120_000 });
    assert.deepEqual(await mdns().resolve4(`web.${zoneName}`), [fip.floating_ip_address]);
    await a.designate.updateRecordset(zone.id, record.id, { records: ['203.0.113.99'] });
    await a.designate.waitForRecordset(zone.id, record.id, { timeoutMs: 120_000 });
    assert.deepEqual(await mdns().resolve4(`web.${zoneName}`), ['203.0.113.99']);
  });

  it('turns a quota refusal into an error that names the resource; lists every page', async () => {
    const project = creds.clouds['cloud-b']!.projectId;
    const network = await b.neutron.createNetwork({ name: `${RUN}-quota-net` });
    cleanups.push(() => b.neutron.deleteNetwork(network.id, { ifExists: true, retryOnConflict: true }));
    const subnet = await b.neutron.createSubnet({ network_id: network.id, cidr: '10.80.0.0/24' });
    const before = await admin.neutron.getQuota(project);
    cleanups.push(() => admin.neutron.updateQuota(project, { port: before.port }));
    const existing = (await neutronDb(`SELECT COUNT(*) FROM ports WHERE project_id = '${project}'`))[0]![0]!;
    await admin.neutron.updateQuota(project, { port: Number(existing) + 3 });
    for (const i of [1, 2, 3]) {
      const port = await b.neutron.createPort({ network_id: network.id, name: `${RUN}-page-${i}`, fixed_ips: [{ subnet_id: subnet.id }] });
      cleanups.push(() => b.neutron.deletePort(port.id, { ifExists: true }));
    }
    const refused = await b.neutron.createPort({ network_id: network.id, name: `${RUN}-one-too-many` }).then(() => undefined, (e: unknown) => e as Error);
    assert.ok(refused && isQuotaError(refused), `expected a quota error, got ${String(refused)}`);
    assert.match(refused.message, new RegExp(`port "${RUN}-one-too-many" on network ${network.id}.*Quota`, 's'));
    const http = new OpenStackHttp({ service: 'neutron', endpoint: async () => `${await b.session.endpointFor('network', { region: creds.region })}`, tokens: b.session });
    const pages = await http.listAll<{ id: string }>('/ports', 'ports', { query: { network_id: network.id }, pageSize: 1 });
    const inDb = await neutronDb(`SELECT id FROM ports WHERE network_id = '${network.id}' ORDER BY id`);
    assert.deepEqual(pages.map((p) => p.id).sort(), inDb.map((r) => r[0]).sort());
    assert.equal(inDb.length, 3);
  });
});
