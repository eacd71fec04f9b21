/**
 * A Keystone v3 session: one token for every service call, renewed before it expires and once more
 * when a service says 401, and the catalog that says where each service is.
 */
import { selectEndpoint, serviceRoot } from './catalog';
import type { CatalogService, EndpointOptions } from './catalog';
import { OpenStackApiError, OpenStackAuthError } from './errors';
import type { OpenStackService } from './errors';
import { OpenStackHttp } from './http';
import type { HttpOptions, TokenSource } from './http';

export interface PasswordAuth {
  username: string;
  password: string;
  /** Default 'Default'. */
  userDomainName?: string;
  /** A project by name (in projectDomainName) or by id; without either the token is unscoped and has no catalog. */
  projectName?: string;
  /** Default 'Default'. */
  projectDomainName?: string;
  projectId?: string;
}

/** An application credential is scoped to its project already: no project is named. */
export type ApplicationCredentialAuth =
  | { applicationCredentialId: string; applicationCredentialSecret: string }
  | { applicationCredentialName: string; username: string; userDomainName?: string; applicationCredentialSecret: string };

export type OpenStackAuth = PasswordAuth | ApplicationCredentialAuth;

export interface KeystoneSessionOptions {
  /** Keystone's URL, with or without /v3. */
  authUrl: string;
  auth: OpenStackAuth;
  /** URLs by service type ('network', 'compute', 'dns') used instead of the catalog's, for catalogs that name hosts not reachable from here. */
  endpointOverride?: Partial<Record<string, string>>;
  http?: HttpOptions;
}

interface TokenBody {
  expires_at: string;
  user: { id: string; name: string };
  project?: { id: string; name: string };
  catalog?: CatalogService[];
}

interface Token {
  token: string;
  expiresAt: number;
  catalog: CatalogService[];
  userId: string;
  projectId: string | undefined;
}

// A token this close to its expiry may expire between being handed out and being checked.
const RENEW_BEFORE_MS = 60_000;

function authBody(auth: OpenStackAuth): unknown {
  if ('applicationCredentialId' in auth) {
    return { auth: { identity: { methods: ['application_credential'], application_credential: { id: auth.applicationCredentialId, secret: auth.applicationCredentialSecret } } } };
  }
  if ('applicationCredentialName' in auth) {
    const user = { name: auth.username, domain: { name: auth.userDomainName ?? 'Default' } };
    return { auth: { identity: { methods: ['application_credential'], application_credential: { name: auth.applicationCredentialName, user, secret: auth.applicationCredentialSecret } } } };
  }
  const identity = { methods: ['password'], password: { user: { name: auth.username, domain: { name: auth.userDomainName ?? 'Default' }, password: auth.password } } };
  if (auth.projectId) return { auth: { identity, scope: { project: { id: auth.projectId } } } };
  if (auth.projectName) return { auth: { identity, scope: { project: { name: auth.projectName, domain: { name: auth.projectDomainName ?? 'Default' } } } } };
  return { auth: { identity } };
}

/** Who asks, for messages: never the password or the secret. */
function who(auth: OpenStackAuth): string {
  if ('applicationCredentialId' in auth) return `application credential ${auth.applicationCredentialId}`;
  if ('applicationCredentialName' in auth) return `application credential "${auth.applicationCredentialName}" of user "${auth.username}" (domain "${auth.userDomainName ?? 'Default'}")`;
  const user = `user "${auth.username}" (domain "${auth.userDomainName ?? 'Default'}")`;
  if (auth.projectId) return `${user} for project ${auth.projectId}`;
  if (auth.projectName) return `${user} for project "${auth.projectName}" (domain "${auth.projectDomainName ?? 'Default'}")`;
  return `${user} (no project: unscoped)`;
}

export class KeystoneSession implements TokenSource {
  /** Keystone's root, ending in /v3. */
  readonly authUrl: string;
  private readonly keystone: OpenStackHttp;
  private current: Token | undefined;
  private inflight: Promise<Token> | undefined;

  constructor(private readonly options: KeystoneSessionOptions) {
    this.authUrl = serviceRoot('identity', options.authUrl);
    this.keystone = new OpenStackHttp({ service: 'keystone', endpoint: async () => this.authUrl }, options.http);
  }

  /** Authenticates now if no valid token is held (bad credentials fail here rather than on a first call). */
  async authenticate(): Promise<void> {
    await this.valid();
  }

  async token(): Promise<string> {
    return (await this.valid()).token;
  }

  /** A service refused this token: the next token() asks Keystone (unless another caller already has). */
  invalidate(token: string): void {
    if (this.current?.token === token) this.current = undefined;
  }

  /** The project of the token; known once authenticated. */
  get projectId(): string {
    const projectId = this.authenticated('projectId').projectId;
    if (!projectId) throw new Error(`the token of ${who(this.options.auth)} is not scoped to a project`);
    return projectId;
  }

  get userId(): string {
    return this.authenticated('userId').userId;
  }

  /** The root URL of a service (see serviceRoot): an override, or the catalog's endpoint. */
  async endpointFor(serviceType: string, opts: EndpointOptions = {}): Promise<string> {
    const override = this.options.endpointOverride?.[serviceType];
    if (override) return serviceRoot(serviceType, override);
    return serviceRoot(serviceType, selectEndpoint((await this.valid()).catalog, serviceType, opts));
  }

  /** An HTTP client of one service, authenticated by this session. */
  client(service: OpenStackService, serviceType: string, endpoint: EndpointOptions, headers?: Record<string, string>): OpenStackHttp {
    return new OpenStackHttp({ service, endpoint: () => this.endpointFor(serviceType, endpoint), tokens: this, headers }, this.options.http);
  }

  private authenticated(what: string): Token {
    if (!this.current) throw new Error(`${what} is known once the session has authenticated (await session.authenticate())`);
    return this.current;
  }

  /** Concurrent callers share the one request to Keystone. */
  private valid(): Promise<Token> {
    if (this.current && this.current.expiresAt - Date.now() > RENEW_BEFORE_MS) return Promise.resolve(this.current);
    this.inflight ??= this.issue().finally(() => {
      this.inflight = undefined;
    });
    return this.inflight;
  }

  private async issue(): Promise<Token> {
    const auth = this.options.auth;
    let response;
    try {
      // Asking for a token twice costs a token: safe to retry.
      response = await this.keystone.request<{ token: TokenBody }>('POST', '/auth/tokens', { body: authBody(auth), idempotent: true, resource: `token for ${who(auth)}` });
    } catch (err) {
      if (err instanceof OpenStackApiError && err.status === 401) throw new OpenStackAuthError(this.authUrl, who(auth), err.detail, err);
      throw err;
    }
    const token = response.headers.get('x-subject-token');
    const body = response.body?.token;
    const expiresAt = Date.parse(body?.expires_at ?? '');
    if (!token || !body || Number.isNaN(expiresAt)) {
      throw new Error(`Keystone at ${this.authUrl} answered the token request of ${who(auth)} without ${!token ? 'an X-Subject-Token header' : 'a token body with expires_at'}`);
    }
    this.current = { token, expiresAt, catalog: body.catalog ?? [], userId: body.user.id, projectId: body.project?.id };
    return this.current;
  }
}
