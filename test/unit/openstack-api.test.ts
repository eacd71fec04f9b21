/**
 * The OpenStack client (providers/openstack/api) against a small HTTP server that plays Keystone
 * and the services of its catalog. What is checked is what the server received: how many token
 * requests, which token each call carried, which pages were asked for, which tries came.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  KeystoneSession,
  NeutronClient,
  OpenStackApiError,
  OpenStackAuthError,
  OpenStackConfigError,
  connectOpenStack,
  isNotFound,
  isQuotaError,
  openStackConnectionSchema,
} from '../../providers/openstack/api';
import type { OpenStackConnectionConfig } from '../../providers/openstack/api';

const PASSWORD = 's3cret-Pa55word';

interface Seen {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: http.IncomingHttpHeaders;
  body: unknown;
  status?: number;
}

interface Reply {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

describe('the OpenStack API client', function () {
  this.timeout(20_000);
  let server: http.Server;
  let base: string;
  // What the fake cloud does and what it saw; reset before each test.
  let tokenLifetimeMs: number;
  let authDelayMs: number;
  let issued: number;
  let valid: Set<string>;
  let auths: Seen[];
  let requests: Seen[];
  let route: (seen: Seen) => Reply | undefined;

  const catalog = () => [
    { type: 'identity', name: 'keystone', endpoints: [{ interface: 'public', region_id: 'RegionOne', region: 'RegionOne', url: `${base}/identity/v3` }] },
    {
      type: 'network',
      name: 'neutron',
      endpoints: [
        // Registered without its version, with a trailing slash, as deployments do.
        { interface: 'public', region_id: 'RegionOne', region: 'RegionOne', url: `${base}/network/` },
        { interface: 'internal', region_id: 'RegionOne', region: 'RegionOne', url: `${base}/network-internal` },
      ],
    },
    { type: 'compute', name: 'nova', endpoints: [{ interface: 'public', region_id: 'RegionOne', region: 'RegionOne', url: `${base}/compute/v2.1/p-demo` }] },
    { type: 'dns', name: 'designate', endpoints: [{ interface: 'public', region_id: 'RegionOne', region: 'RegionOne', url: `${base}/dns` }] },
  ];

  function keystone(seen: Seen): Reply {
    const identity = (seen.body as { auth: { identity: { password?: { user: { password: string } }; application_credential?: { secret: string } } } }).auth.identity;
    const secret = identity.password?.user.password ?? identity.application_credential?.secret;
    if (secret !== PASSWORD) return { status: 401, body: { error: { code: 401, title: 'Unauthorized', message: 'The request you have made requires authentication.' } } };
    const token = `tok-${++issued}`;
    valid.add(token);
    const expires_at = new Date(Date.now() + tokenLifetimeMs).toISOString().replace('Z', '000Z'); // Keystone writes microseconds
    const body = { token: { expires_at, user: { id: 'u-alice', name: 'alice' }, project: { id: 'p-demo', name: 'demo' }, catalog: catalog() } };
    return { status: 201, body, headers: { 'X-Subject-Token': token } };
  }

  async function handle(req: http.IncomingMessage, res: http.ServerResponse, data: string) {
    const url = new URL(req.url ?? '/', base);
    const seen: Seen = { method: req.method ?? '', path: url.pathname, query: url.searchParams, headers: req.headers, body: data ? JSON.parse(data) : undefined };
    let reply: Reply;
    if (seen.method === 'POST' && seen.path === '/identity/v3/auth/tokens') {
      auths.push(seen);
      await new Promise((resolve) => setTimeout(resolve, authDelayMs));
      reply = keystone(seen);
    } else {
      requests.push(seen);
      const token = req.headers['x-auth-token'];
      reply = typeof token === 'string' && valid.has(token) ? (route(seen) ?? { status: 404, body: { NeutronError: { type: 'HTTPNotFound', message: `no route ${seen.path}` } } }) : { status: 401, body: 'Authentication required' };
    }
    seen.status = reply.status;
    res.writeHead(reply.status, { 'Content-Type': 'application/json', ...reply.headers });
    res.end(reply.body === undefined ? '' : typeof reply.body === 'string' ? reply.body : JSON.stringify(reply.body));
  }

  const config = (overrides: Partial<OpenStackConnectionConfig> = {}): OpenStackConnectionConfig => ({
    authUrl: `${base}/identity`,
    region: 'RegionOne',
    auth: { username: 'alice', password: PASSWORD, projectName: 'demo' },
    // Fast retries: the test waits milliseconds where a cloud would wait seconds.
    http: { retryDelayMs: 5, maxRetryDelayMs: 20, timeoutMs: 5_000 },
    ...overrides,
  });

  const networksRoute = (seen: Seen): Reply | undefined =>
    seen.method === 'GET' && seen.path === '/network/v2.0/networks' ? { status: 200, body: { networks: [{ id: 'n-1', name: 'vi-net' }] } } : undefined;

  before(async () => {
    server = http.createServer((req, res) => {
      let data = '';
      req.on('data', (chunk: Buffer) => (data += chunk.toString()));
      req.on('end', () => void handle(req, res, data));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
  });

  beforeEach(() => {
    tokenLifetimeMs = 3_600_000;
    authDelayMs = 0;
    issued = 0;
    valid = new Set();
    auths = [];
    requests = [];
    route = networksRoute;
  });

  it('asks Keystone once for many calls, each carrying its token, on a connection it closes', async () => {
    const { neutron } = await connectOpenStack(config());
    for (let i = 0; i < 3; i++) assert.deepEqual((await neutron.listNetworks({ name: 'vi-net' })).map((n) => n.name), ['vi-net']);
    assert.equal(auths.length, 1);
    assert.equal(requests.length, 3);
    for (const r of requests) {
      assert.equal(r.headers['x-auth-token'], 'tok-1');
      assert.equal(r.headers.connection, 'close');
      assert.equal(r.path, '/network/v2.0/networks');
      assert.equal(r.query.get('name'), 'vi-net');
    }
    assert.deepEqual(auths[0]!.body, {
      auth: {
        identity: { methods: ['password'], password: { user: { name: 'alice', domain: { name: 'Default' }, password: PASSWORD } } },
        scope: { project: { name: 'demo', domain: { name: 'Default' } } },
      },
    });
  });

  it('renews a token within a minute of its expiry', async () => {
    tokenLifetimeMs = 61_000; // good for one second more than the renewal margin
    const { neutron } = await connectOpenStack(config());
    await neutron.listNetworks();
    await new Promise((resolve) => setTimeout(resolve, 1_200));
    await neutron.listNetworks();
    assert.equal(auths.length, 2);
    assert.deepEqual(
      requests.map((r) => r.headers['x-auth-token']),
      ['tok-1', 'tok-2'],
    );
  });

  it('on a 401 asks Keystone for a new token and tries the call once more', async () => {
    const { neutron } = await connectOpenStack(config());
    valid.clear(); // Keystone forgot its tokens (a fernet key rotation, a restart)
    assert.deepEqual((await neutron.listNetworks()).map((n) => n.id), ['n-1']);
    assert.equal(auths.length, 2);
    assert.deepEqual(
      requests.map((r) => [r.headers['x-auth-token'], r.status]),
      [
        ['tok-1', 401],
        ['tok-2', 200],
      ],
    );
  });

  it('shares one token request among concurrent first calls', async () => {
    authDelayMs = 100;
    const session = new KeystoneSession({ authUrl: `${base}/identity/v3/`, auth: { username: 'alice', password: PASSWORD, projectId: 'p-demo' } });
    const neutron = new NeutronClient(session, { region: 'RegionOne' });
    await Promise.all([1, 2, 3, 4, 5].map(() => neutron.listNetworks()));
    assert.equal(auths.length, 1);
    assert.equal(requests.length, 5);
    assert.ok(requests.every((r) => r.headers['x-auth-token'] === 'tok-1'));
    assert.deepEqual((auths[0]!.body as { auth: { scope: unknown } }).auth.scope, { project: { id: 'p-demo' } });
    assert.equal(session.projectId, 'p-demo');
    assert.equal(session.userId, 'u-alice');
  });

  it("follows Neutron's next links across three pages, keeping the filter and the token", async () => {
    const ports = ['p1', 'p2', 'p3', 'p4', 'p5'].map((id) => ({ id, name: id, network_id: 'n-1' }));
    route = (seen) => {
      if (seen.path !== '/network/v2.0/ports') return undefined;
      // Pages of two, as a Neutron with pagination_max_limit = 2 would serve them.
      const marker = seen.query.get('marker');
      const start = marker ? ports.findIndex((p) => p.id === marker) + 1 : 0;
      const page = ports.slice(start, start + 2);
      const links = [{ rel: 'previous', href: `${base}/network/v2.0/ports?network_id=n-1&limit=2&marker=${page[0]!.id}&page_reverse=True` }];
      if (start + 2 < ports.length) links.push({ rel: 'next', href: `${base}/network/v2.0/ports?network_id=n-1&limit=2&marker=${page.at(-1)!.id}` });
      return { status: 200, body: { ports: page, ports_links: links } };
    };
    const { neutron } = await connectOpenStack(config());
    assert.deepEqual((await neutron.listPorts({ network_id: 'n-1' })).map((p) => p.id), ['p1', 'p2', 'p3', 'p4', 'p5']);
    assert.deepEqual(
      requests.map((r) => r.query.get('marker')),
      [null, 'p2', 'p4'],
    );
    assert.ok(requests.every((r) => r.query.get('network_id') === 'n-1' && r.headers['x-auth-token'] === 'tok-1'));
  });

  it("follows Designate's links.next", async () => {
    const records = ['a', 'b', 'c'].map((n) => ({ id: `rs-${n}`, name: `${n}.example.org.`, type: 'A', records: ['10.0.0.1'] }));
    route = (seen) => {
      if (seen.path !== '/dns/v2/zones/z-1/recordsets') return undefined;
      const i = Number(seen.query.get('marker')?.slice(3) ?? -1) + 1;
      const next = i + 1 < records.length ? `${base}/dns/v2/zones/z-1/recordsets?type=A&limit=1&marker=rs-${i}` : undefined;
      return { status: 200, body: { recordsets: [records[i]], links: { self: seen.path, ...(next ? { next } : {}) }, metadata: { total_count: 3 } } };
    };
    const { designate } = await connectOpenStack(config());
    assert.deepEqual((await designate.listRecordsets('z-1', { type: 'A' })).map((r) => r.name), ['a.example.org.', 'b.example.org.', 'c.example.org.']);
    assert.equal(requests.length, 3);
  });

  it('retries a GET the service answered 503, then has its answer', async () => {
    let unavailable = 2;
    route = (seen) => (seen.path === '/network/v2.0/networks' && unavailable-- > 0 ? { status: 503, body: '<html><body>503 Service Unavailable</body></html>' } : networksRoute(seen));
    const { neutron } = await connectOpenStack(config());
    assert.deepEqual((await neutron.listNetworks()).map((n) => n.name), ['vi-net']);
    assert.deepEqual(
      requests.map((r) => r.status),
      [503, 503, 200],
    );
  });

  it('does not retry a POST the service answered 503 (a retry could create a second port)', async () => {
    route = () => ({ status: 503, body: 'Service Unavailable' });
    const { neutron } = await connectOpenStack(config());
    await assert.rejects(neutron.createPort({ network_id: 'n-1', name: 'web' }), (err: unknown) => err instanceof OpenStackApiError && err.status === 503);
    assert.equal(requests.length, 1);
  });

  it('says a quota error as one, naming the resource, in Neutron\'s words', async () => {
    const message = "Quota exceeded for resources: ['port'].";
    route = (seen) => (seen.method === 'POST' && seen.path === '/network/v2.0/ports' ? { status: 409, body: { NeutronError: { type: 'OverQuota', message, detail: '' } } } : undefined);
    const { neutron } = await connectOpenStack(config());
    const err = await neutron.createPort({ network_id: 'n-1', name: 'web', fixed_ips: [{ subnet_id: 's-1', ip_address: '10.0.0.5' }], mac_address: 'fa:16:3e:00:00:01' }).then(
      () => assert.fail('the port was created'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof OpenStackApiError);
    assert.ok(isQuotaError(err));
    assert.equal(err.status, 409);
    assert.equal(err.type, 'OverQuota');
    assert.match(err.message, /^neutron POST \/network\/v2\.0\/ports \(port "web" on network n-1 at 10\.0\.0\.5\) → 409 OverQuota: /);
    assert.ok(err.message.includes(message));
    assert.equal(requests.length, 1);
    assert.deepEqual(requests[0]!.body, { port: { network_id: 'n-1', name: 'web', fixed_ips: [{ subnet_id: 's-1', ip_address: '10.0.0.5' }], mac_address: 'fa:16:3e:00:00:01' } });
  });

  it('takes a 404 on delete as done when asked to, and says it otherwise', async () => {
    route = (seen) => (seen.method === 'DELETE' ? { status: 404, body: { NeutronError: { type: 'PortNotFound', message: 'Port gone could not be found.' } } } : undefined);
    const { neutron } = await connectOpenStack(config());
    assert.equal(await neutron.deletePort('gone', { ifExists: true }), false);
    await assert.rejects(neutron.deletePort('gone'), (err: unknown) => isNotFound(err) && (err as OpenStackApiError).type === 'PortNotFound');
    assert.equal(requests.length, 2);
  });

  it('refuses bad credentials with an OpenStackAuthError naming who asked, never the password', async () => {
    const wrong = 'wr0ng-Pa55word';
    const err = await connectOpenStack(config({ auth: { username: 'alice', password: wrong, projectName: 'demo' } })).then(
      () => assert.fail('connected'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof OpenStackAuthError);
    assert.equal(auths.length, 1, 'a 401 from Keystone is not retried');
    assert.equal((auths[0]!.body as { auth: { identity: { password: { user: { password: string } } } } }).auth.identity.password.user.password, wrong);
    assert.ok(!err.message.includes(wrong) && !String(err.stack).includes(wrong));
    for (const part of [`${base}/identity/v3`, 'user "alice"', 'project "demo"']) assert.ok(err.message.includes(part), `${part} not in: ${err.message}`);

    const secret = 'app-cred-s3cret';
    const appErr = await connectOpenStack(config({ auth: { applicationCredentialId: 'ac-1', applicationCredentialSecret: secret } })).catch((e: unknown) => e);
    assert.ok(appErr instanceof OpenStackAuthError);
    assert.ok(appErr.message.includes('application credential ac-1') && !appErr.message.includes(secret));
    assert.equal((auths[1]!.body as { auth: { identity: { methods: string[] } } }).auth.identity.methods[0], 'application_credential');
  });

  it('names the service, region and interface asked for when the catalog lacks them, and what it has', async () => {
    const { session } = await connectOpenStack(config());
    const err: Error = await session.endpointFor('dns', { region: 'RegionTwo' }).then(
      () => assert.fail('found an endpoint'),
      (e: unknown) => e as Error,
    );
    assert.match(err.message, /no "dns" endpoint in region "RegionTwo" \(interface public\)/);
    for (const service of catalog()) assert.ok(err.message.includes(`${service.type} (RegionOne: `), `${service.type} not in: ${err.message}`);
    assert.match(err.message, /network \(RegionOne: public, internal\)/);
  });

  it('sends Nova its microversion and reports the fault of a server that went to ERROR', async () => {
    route = (seen) =>
      seen.path === '/compute/v2.1/p-demo/servers/s-1'
        ? { status: 200, body: { server: { id: 's-1', name: 'web', status: 'ERROR', fault: { code: 500, message: 'No valid host was found.', created: '' } } } }
        : undefined;
    const { nova } = await connectOpenStack(config());
    await assert.rejects(nova.waitForServer('s-1', 'ACTIVE', { timeoutMs: 5_000, intervalMs: 10 }), /server "web" \(s-1\) is ERROR: No valid host was found\./);
    assert.equal(requests.length, 1);
    assert.equal(requests[0]!.headers['openstack-api-version'], 'compute 2.79');
  });

  it('rejects a configuration without authUrl, naming the field, before any request', async () => {
    const rest: Partial<OpenStackConnectionConfig> = config();
    delete rest.authUrl;
    const parsed = openStackConnectionSchema.safeParse(rest);
    assert.equal(parsed.success, false);
    assert.ok(parsed.error!.issues.some((i) => i.path[0] === 'authUrl'));
    await assert.rejects(connectOpenStack(rest as OpenStackConnectionConfig), (err: unknown) => err instanceof OpenStackConfigError && /authUrl/.test(err.message));
    const noPassword = openStackConnectionSchema.safeParse({ ...config(), auth: { username: 'alice', projectName: 'demo' } });
    assert.ok(noPassword.error!.issues.some((i) => i.path.join('.') === 'auth.password'));
    assert.equal(auths.length + requests.length, 0);
  });

  it('reaches a service at its endpoint override rather than at the catalog URL', async () => {
    route = (seen) => (seen.path === '/elsewhere/v2.0/networks' ? { status: 200, body: { networks: [] } } : undefined);
    const { neutron } = await connectOpenStack(config({ endpointOverride: { network: `${base}/elsewhere/` } }));
    assert.deepEqual(await neutron.listNetworks(), []);
    assert.deepEqual(
      requests.map((r) => r.path),
      ['/elsewhere/v2.0/networks'],
    );
  });
});
