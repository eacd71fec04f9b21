/**
 * The OpenStack provider's control plane against the development OpenStack, with a real host
 * edge (an embedded cloud's namespace) realising what Neutron records. Each step is checked at
 * both ends by observers of their own: Neutron's and Nova's rows in MariaDB, designate-mdns
 * answering DNS, and the host's kernel (namespaces, links, addresses, nftables).
 */
import assert from 'node:assert/strict';
import { Resolver } from 'node:dns/promises';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ip, run } from '../../lib/exec';
import { waitFor } from '../../lib/processes';
import { criuPath, testbedsDir } from '../../lib/paths';
import type { ContainerSpec } from '../../lib/types';
import { testbedDown, testbedUp, type TestbedRecord } from '../../providers/local/testbed';
import { connectOpenStack, type OpenStackConnection } from '../../providers/openstack/api';
import type { OpenStackCloudConfig } from '../../providers/openstack/cloud-config';
import type { DevCloudCredentials } from '../../providers/openstack/dev-cloud/cloud-resources';
import { devCloudLayout, PORTS } from '../../providers/openstack/dev-cloud/layout';
import type { Cloud } from '../../providers/provider';
import { openCloud } from '../../providers/registry';
import { devOpenStack } from './dev-openstack';
import { emptyProject } from './openstack-project';

const ID = 'mvos';
const stateDir = path.join(testbedsDir, ID);
const HOST_SERVER = `migravi-host-${ID}`;

const web: ContainerSpec = {
  name: 'web', vi: 'shop', args: ['/bin/sh'], readonlyRootfs: true,
  interfaces: [{ network: 'shop-net', ip: '10.61.0.10', mac: '02:61:00:00:00:0a' }],
  ingress: [{ port: 80, protocol: 'tcp', from: '0.0.0.0/0' }, { port: '8000-8010', protocol: 'tcp', from: '198.51.100.0/24' }],
};
const network = { name: 'shop-net', cidr: '10.61.0.0/24', vni: 4261, mtu: 1400, vi: 'shop' };

async function db(database: string, sql: string): Promise<string[][]> {
  const out = await run('mariadb', ['--no-defaults', '-S', devCloudLayout().mysqlSocket, '-uroot', '-N', '-B', database, '-e', sql]);
  return out.stdout.trim().split('\n').filter(Boolean).map((line) => line.split('\t'));
}

describe('OpenStack control plane: Neutron and Designate hold the truth, the host realises it', function () {
  this.timeout(600_000);
  let creds: DevCloudCredentials;
  let record: TestbedRecord;
  let cloud: Cloud;
  let project: string;
  let api: OpenStackConnection;
  const zone = `${ID}.cloud-a.example.`;
  const configDir = mkdtempSync(path.join(tmpdir(), 'migravi-os-'));

  before(async () => {
    creds = await devOpenStack();
    await testbedDown(stateDir, ID);
    record = await testbedUp({ id: ID, stateDir, clouds: ['os-a', 'os-b'], wanGateway: '203.0.113.1', wanPrefixLength: 25, wanRateMbit: 1000, criuPath, hostLink: '198.18.0.28/30' });
    const user = creds.clouds['cloud-a']!;
    project = user.projectId;
    const config: OpenStackCloudConfig = {
      provider: 'openstack', name: 'os-a',
      connection: { authUrl: creds.authUrl, region: creds.region, auth: { username: user.username, password: user.password, projectName: user.projectName } },
      externalNetwork: creds.externalNetwork, floatingRange: creds.floatingRange,
      hostServer: { name: HOST_SERVER, flavor: creds.flavor, image: creds.image },
      host: record.clouds[0]!,
    };
    const file = path.join(configDir, 'cloud.json');
    writeFileSync(file, JSON.stringify(config));
    cloud = await openCloud(file); // through the registry, as a worker opens it
    api = await connectOpenStack(config.connection);
    await emptyProject(api, { serverPrefix: HOST_SERVER, zoneSuffix: zone });
    const created = await api.designate.createZone({ name: zone, email: 'ops@cloud-a.example', ttl: 60 });
    await api.designate.waitForZone(created.id, { timeoutMs: 120_000 });
  });

  after(async () => {
    const quietly = (p: Promise<unknown>) => p.catch((err: unknown) => console.log(`      cleanup: ${(err as Error).message}`));
    if (api) await quietly(emptyProject(api, { serverPrefix: HOST_SERVER, zoneSuffix: zone }));
    await testbedDown(stateDir, ID);
    rmSync(configDir, { recursive: true, force: true });
  });

  it('makes the network, the port with its IP, MAC and rules, the floating IP and the name through the APIs, and realises each on the host', async () => {
    const { controlPlane } = cloud;
    const edge = record.clouds[0]!.netns;
    assert.deepEqual(await controlPlane.ensureNetwork(network), { created: true });
    const [net] = await db('neutron', `SELECT n.id, s.cidr, s.gateway_ip FROM networks n JOIN subnets s ON s.network_id = n.id WHERE n.name = '${network.name}' AND n.project_id = '${project}'`);
    assert.deepEqual(net?.slice(1), ['10.61.0.0/24', '10.61.0.1']);
    assert.match((await ip(['-j', 'addr', 'show', 'dev', 'br-shop-net'], edge)).stdout, /"local":"10\.61\.0\.1"/, 'no bridge with the gateway on the host');
    assert.equal((await cloud.controlPlane.getNetwork(network.name))?.vni, 4261);
    await assert.rejects(controlPlane.ensureNetwork({ ...network, cidr: '10.62.0.0/24' }), /shop-net.*10\.61\.0\.0\/24.*not 10\.62\.0\.0\/24/);

    await controlPlane.ensurePort(web);
    const [port] = await db('neutron', `SELECT p.id, p.mac_address, a.ip_address, p.admin_state_up FROM ports p JOIN ipallocations a ON a.port_id = p.id WHERE p.name = 'web/eth0' AND p.project_id = '${project}'`);
    assert.deepEqual(port?.slice(1), [web.interfaces[0]!.mac, '10.61.0.10', '0'], 'Neutron\'s port (created down)');
    const rules = await db('neutron', `SELECT r.protocol, r.port_range_min, r.port_range_max, r.remote_ip_prefix FROM securitygrouprules r JOIN securitygroupportbindings b ON b.security_group_id = r.security_group_id WHERE b.port_id = '${port![0]}' AND r.direction = 'ingress' ORDER BY r.port_range_min`);
    assert.deepEqual(rules, [['tcp', '80', '80', '0.0.0.0/0'], ['tcp', '8000', '8010', '198.51.100.0/24']]);
    const eth0 = JSON.parse((await ip(['-j', 'addr', 'show', 'dev', 'eth0'], `${edge}-web`)).stdout) as Array<{ address: string; addr_info: Array<{ local: string }> }>;
    assert.deepEqual([eth0[0]!.address, eth0[0]!.addr_info[0]!.local], [web.interfaces[0]!.mac, '10.61.0.10'], 'the host\'s port is not what Neutron holds');
    assert.match((await run('nft', ['list', 'ruleset'], { netns: `${edge}-web` })).stdout, /tcp dport 8000-8010 accept/);
    assert.deepEqual(await controlPlane.addressesInUse(network.name).then((a) => a.filter((x) => x.owner === 'web')), [{ ip: '10.61.0.10', mac: web.interfaces[0]!.mac, owner: 'web' }]);

    await controlPlane.setPortEnabled('web', true);
    assert.deepEqual((await db('neutron', `SELECT admin_state_up FROM ports WHERE id = '${port![0]}'`))[0], ['1']);
    assert.match((await ip(['link', 'show', 'v-web'], edge)).stdout, /state UP|,UP/);

    const address = await controlPlane.associateFloatingIp({ container: 'web', privateIp: '10.61.0.10' });
    assert.deepEqual((await db('neutron', `SELECT floating_ip_address, fixed_ip_address FROM floatingips WHERE fixed_port_id = '${port![0]}'`))[0], [address, '10.61.0.10']);
    assert.ok((await ip(['-j', 'addr', 'show', 'dev', 'wan0'], edge)).stdout.includes(`"${address}"`), `the edge does not answer for ${address}`);
    assert.match((await run('nft', ['list', 'ruleset'], { netns: edge })).stdout, new RegExp(`ip daddr ${address.replace(/\./g, '\\.')} dnat to 10\\.61\\.0\\.10`));
    assert.deepEqual(await controlPlane.floatingIps(), [{ address, container: 'web', privateIp: '10.61.0.10' }]);

    const registered = { ...web, floatingIp: { network: network.name, address }, publicNames: [{ name: `www.${zone}`, zone, ttl: 60, dnsCloud: 'os-a' }] };
    await controlPlane.registerContainer(registered);
    const chunks = await db('nova', `SELECT COUNT(*) FROM instance_metadata m JOIN instances i ON i.uuid = m.instance_uuid WHERE i.display_name = '${HOST_SERVER}' AND m.deleted = 0 AND m.\`key\` LIKE 'migravi.web.%'`);
    assert.ok(Number(chunks[0]![0]) >= 2, `the record is not in Nova's metadata of ${HOST_SERVER}: ${chunks[0]![0]} chunks`);
    assert.deepEqual((await controlPlane.listContainers())['web'], registered);

    assert.ok((await controlPlane.dnsZones()).includes(zone));
    await controlPlane.setDnsRecords(zone, [{ name: `www.${zone}`, ttl: 60, addresses: [address] }]);
    const resolver = new Resolver({ timeout: 2_000, tries: 2 });
    resolver.setServers([`127.0.0.1:${PORTS.designateMdns}`]);
    assert.deepEqual(await resolver.resolve4(`www.${zone}`), [address]);
    assert.deepEqual((await controlPlane.dnsRecords(zone)).filter((r) => r.name === `www.${zone}`), [{ name: `www.${zone}`, ttl: 60, addresses: [address] }]);
  });

  it('leaves nothing in the project nor on the host once released', async () => {
    const { controlPlane } = cloud;
    const edge = record.clouds[0]!.netns;
    await controlPlane.deleteDnsRecords(zone, [`www.${zone}`]);
    await controlPlane.releaseFloatingIp('web');
    await controlPlane.setPortEnabled('web', false);
    await controlPlane.removePort('web');
    await controlPlane.unregisterContainer('web');
    await controlPlane.removeNetwork(network.name);
    const left = await db('neutron', [
      `SELECT 'port', name FROM ports WHERE project_id = '${project}' AND device_owner <> 'network:router_gateway'`,
      `SELECT 'network', name FROM networks WHERE project_id = '${project}'`,
      `SELECT 'security group', name FROM securitygroups WHERE project_id = '${project}' AND name LIKE 'migravi:%'`,
      `SELECT 'floating IP', floating_ip_address FROM floatingips WHERE project_id = '${project}'`,
      `SELECT 'router', name FROM routers WHERE project_id = '${project}'`,
    ].join(' UNION ALL '));
    assert.deepEqual(left, [], 'left in the project');
    assert.deepEqual(await db('nova', `SELECT m.\`key\` FROM instance_metadata m JOIN instances i ON i.uuid = m.instance_uuid WHERE i.display_name = '${HOST_SERVER}' AND m.deleted = 0 AND m.\`key\` LIKE 'migravi.web.%'`), []);
    assert.deepEqual(await controlPlane.listContainers(), {});
    assert.equal((await ip(['link', 'show', 'br-shop-net'], edge, true)).exitCode !== 0, true, 'the bridge is still on the host');
    assert.equal((await run('ip', ['netns', 'list'])).stdout.includes(`${edge}-web`), false, 'the port\'s namespace is still on the host');
    const resolver = new Resolver({ timeout: 2_000, tries: 1 });
    resolver.setServers([`127.0.0.1:${PORTS.designateMdns}`]);
    // designate-mdns answers from Designate's database: the name is gone once the deletion is recorded.
    await waitFor(`www.${zone} to be gone from designate-mdns`, () => resolver.resolve4(`www.${zone}`).then(() => false, (err: NodeJS.ErrnoException) => {
      // designate-mdns refuses a query for a name its zone does not hold (seen here), where a resolver says NXDOMAIN.
      return ['ENOTFOUND', 'ENODATA', 'EREFUSED'].includes(err.code ?? '');
    }), 60_000, 500);
  });
});
