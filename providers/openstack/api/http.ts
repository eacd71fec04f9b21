/**
 * JSON over HTTP to one OpenStack service: the token, timeouts, retries of what is safe to retry,
 * errors in OpenStack's own words, and pagination. Every client of this directory talks through it.
 */
import { OpenStackApiError, OpenStackConnectionError, faultOf } from './errors';
import type { OpenStackService } from './errors';

export type HttpMethod = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
export type Query = Record<string, string | number | boolean | undefined | null | readonly string[]>;

/** Where tokens come from (the Keystone session); a 401 invalidates the token it was given. */
export interface TokenSource {
  token(): Promise<string>;
  invalidate(token: string): void;
}

export interface HttpOptions {
  /** Per try, headers and body. Default 30 s. */
  timeoutMs?: number;
  /** Tries of a retryable request, the first one included. Default 5. */
  tries?: number;
  /** Wait before the second try; doubled before each later one. Default 500 ms. */
  retryDelayMs?: number;
  /** Ceiling of one wait between tries (a Retry-After above it is cut to it). Default 8 s. */
  maxRetryDelayMs?: number;
}

export interface RequestOptions {
  query?: Query;
  body?: unknown;
  /** What the request is about, for error messages: 'port "web" on network "vi-net"'. */
  resource?: string;
  /**
   * Whether sending the request twice does no more than sending it once. Such requests are retried
   * on 502/503/504, a refused or reset connection, and a timeout. Default: true for GET, HEAD, PUT
   * and DELETE, false for POST and PATCH (a POST retried after a reset may create a second port).
   */
  idempotent?: boolean;
  /**
   * Retry on 409 too (not on quota errors, which waiting does not cure): for conflicts that pass,
   * like deleting a network whose ports are still going away or a server Nova is still building.
   */
  retryOnConflict?: boolean;
  headers?: Record<string, string>;
  timeoutMs?: number;
}

/** Options of the clients' deletes. */
export interface DeleteOptions {
  /** A 404 is success: the resource is already gone (delete answers false). */
  ifExists?: boolean;
  /** Retry a 409: a network or security group still used by ports that are going away, a server Nova is busy with. */
  retryOnConflict?: boolean;
}

export interface OpenStackResponse<T> {
  status: number;
  headers: Headers;
  body: T;
}

interface Target {
  service: OpenStackService;
  /** The service's root URL, without a trailing slash (e.g. http://neutron:9696/v2.0). */
  endpoint: () => Promise<string>;
  /** None for Keystone's own token request. */
  tokens?: TokenSource;
  headers?: Record<string, string>;
}

interface Exchange {
  status: number;
  headers: Headers;
  text: string;
  /** An earlier try may have reached the service (a reset, a gateway error, a timeout). */
  earlierTryMayHaveApplied: boolean;
}

const IDEMPOTENT = new Set<HttpMethod>(['GET', 'HEAD', 'PUT', 'DELETE']);
const GATEWAY = new Set([502, 503, 504]);
// ECONNREFUSED: nothing was sent. The others: the request may have been received.
const TRANSIENT = new Set(['ECONNREFUSED', 'ECONNRESET', 'UND_ERR_SOCKET', 'EPIPE', 'ETIMEDOUT', 'UND_ERR_CONNECT_TIMEOUT', 'EAI_AGAIN', 'TimeoutError']);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** undici wraps the socket's error: TypeError('fetch failed', { cause: { code } }). */
function errorCode(err: unknown): string {
  const e = err as { name?: string; code?: string; cause?: { code?: string; name?: string; errors?: Array<{ code?: string }> } };
  if (e?.name === 'TimeoutError') return 'TimeoutError';
  return e?.cause?.code ?? e?.cause?.errors?.[0]?.code ?? e?.code ?? e?.cause?.name ?? e?.name ?? 'Error';
}

export class OpenStackHttp {
  constructor(
    private readonly target: Target,
    private readonly options: HttpOptions = {},
  ) {}

  get service(): OpenStackService {
    return this.target.service;
  }

  /** A request whose answer must be a success; anything else throws an OpenStackApiError. */
  async request<T>(method: HttpMethod, path: string, opts: RequestOptions = {}): Promise<OpenStackResponse<T>> {
    const { response } = await this.send<T>(method, path, opts, false);
    return response!;
  }

  async get<T>(path: string, opts: RequestOptions = {}): Promise<T> {
    return (await this.request<T>('GET', path, opts)).body;
  }

  /** undefined when the service says 404. */
  async getIfExists<T>(path: string, opts: RequestOptions = {}): Promise<T | undefined> {
    return (await this.send<T>('GET', path, opts, true)).response?.body;
  }

  async post<T>(path: string, body: unknown, opts: RequestOptions = {}): Promise<T> {
    return (await this.request<T>('POST', path, { ...opts, body })).body;
  }

  async put<T>(path: string, body: unknown, opts: RequestOptions = {}): Promise<T> {
    return (await this.request<T>('PUT', path, { ...opts, body })).body;
  }

  /**
   * True when this call deleted it. With ifExists, a 404 is success too (false: it was already
   * gone). A 404 after a try that may have reached the service is this call's own delete: true.
   */
  async delete(path: string, opts: RequestOptions & DeleteOptions = {}): Promise<boolean> {
    const { response, missing } = await this.send<unknown>('DELETE', path, opts, true);
    if (response) return true;
    if (missing?.earlierTryMayHaveApplied) return true;
    if (opts.ifExists) return false;
    throw this.failure('DELETE', missing!.url, opts, missing!);
  }

  /**
   * Every item of a paginated list, following the next links: Neutron's and Nova's
   * `<key>_links` (rel "next"), Designate's `links.next`. A link is read for its query (limit,
   * marker, filters) and applied to this client's endpoint: the host in a link is the one the
   * service believes it has, which is not always reachable from here (the reason for endpoint
   * overrides).
   */
  async listAll<T>(path: string, key: string, opts: RequestOptions & { pageSize?: number } = {}): Promise<T[]> {
    const first = new URL(await this.url(path, { ...opts.query, ...(opts.pageSize ? { limit: opts.pageSize } : {}) }));
    const items: T[] = [];
    const seen = new Set<string>();
    for (let url: URL | undefined = first; url; ) {
      if (seen.has(url.search)) throw new Error(`${this.target.service} GET ${first.pathname}: the next-page link repeats a page (${url.search})`);
      seen.add(url.search);
      const body: Record<string, unknown> = await this.get<Record<string, unknown>>(url.toString(), { ...opts, query: undefined });
      const page: unknown = body?.[key];
      if (!Array.isArray(page)) throw new Error(`${this.target.service} GET ${url.pathname}: the answer has no "${key}" list`);
      for (const item of page as T[]) items.push(item); // no spread: a long page would overflow the stack
      const next: string | undefined = page.length ? nextLink(body, key) : undefined;
      url = next ? new URL(`${first.origin}${first.pathname}${new URL(next, first).search}`) : undefined;
    }
    return items;
  }

  private async url(path: string, query?: Query): Promise<string> {
    const url = new URL(/^https?:\/\//.test(path) ? path : `${await this.target.endpoint()}${path}`);
    for (const [name, value] of Object.entries(query ?? {})) {
      if (value === undefined || value === null) continue;
      for (const v of Array.isArray(value) ? value : [value]) url.searchParams.append(name, String(v));
    }
    return url.toString();
  }

  /** The answer, or (when allowed) the 404 that stood for it; a 401 gets one fresh token and one more try. */
  private async send<T>(
    method: HttpMethod,
    path: string,
    opts: RequestOptions,
    allowMissing: boolean,
  ): Promise<{ response?: OpenStackResponse<T>; missing?: Exchange & { url: string } }> {
    const url = await this.url(path, opts.query);
    const tokens = this.target.tokens;
    let token = await tokens?.token();
    let exchange = await this.withRetries(method, url, opts, token);
    if (exchange.status === 401 && tokens && token) {
      // Revoked, or expired before its time (Keystone restarted with new fernet keys, clocks apart).
      tokens.invalidate(token);
      token = await tokens.token();
      exchange = await this.withRetries(method, url, opts, token);
    }
    if (exchange.status === 404 && allowMissing) return { missing: { ...exchange, url } };
    if (exchange.status < 200 || exchange.status >= 300) throw this.failure(method, url, opts, exchange);
    let body: T;
    try {
      body = (exchange.text ? JSON.parse(exchange.text) : undefined) as T;
    } catch {
      throw new Error(`${this.target.service} ${method} ${new URL(url).pathname}: the answer is not JSON: ${exchange.text.slice(0, 200)}`);
    }
    return { response: { status: exchange.status, headers: exchange.headers, body } };
  }

  private async withRetries(method: HttpMethod, url: string, opts: RequestOptions, token: string | undefined): Promise<Exchange> {
    const tries = this.options.tries ?? 5;
    const idempotent = opts.idempotent ?? IDEMPOTENT.has(method);
    let mayHaveApplied = false;
    for (let attempt = 1; ; attempt++) {
      let exchange: Exchange;
      try {
        exchange = { ...(await this.once(method, url, opts, token)), earlierTryMayHaveApplied: mayHaveApplied };
      } catch (err) {
        const code = errorCode(err);
        if (!idempotent || !TRANSIENT.has(code) || attempt >= tries) {
          throw new OpenStackConnectionError(this.target.service, method, url, opts.resource, code, attempt, err);
        }
        mayHaveApplied ||= code !== 'ECONNREFUSED';
        await sleep(this.backoff(attempt));
        continue;
      }
      const gateway = GATEWAY.has(exchange.status) && idempotent;
      const conflict = exchange.status === 409 && opts.retryOnConflict === true && faultOf(exchange.text).type !== 'OverQuota';
      if (!(gateway || conflict) || attempt >= tries) return exchange;
      mayHaveApplied ||= gateway && exchange.status !== 503; // 503: the service (or its proxy) turned it away
      await sleep(this.backoff(attempt, exchange.headers.get('retry-after')));
    }
  }

  private async once(method: HttpMethod, url: string, opts: RequestOptions, token: string | undefined) {
    const response = await fetch(url, {
      method,
      headers: {
        Accept: 'application/json',
        // uwsgi's http-socket closes idle keep-alive connections without a word; a reused one fails the next request.
        Connection: 'close',
        ...(opts.body !== undefined ? { 'Content-Type': 'application/json' } : {}),
        ...(token ? { 'X-Auth-Token': token } : {}),
        ...this.target.headers,
        ...opts.headers,
      },
      ...(opts.body !== undefined ? { body: JSON.stringify(opts.body) } : {}),
      signal: AbortSignal.timeout(opts.timeoutMs ?? this.options.timeoutMs ?? 30_000),
    });
    return { status: response.status, headers: response.headers, text: await response.text() };
  }

  private backoff(attempt: number, retryAfter?: string | null): number {
    const max = this.options.maxRetryDelayMs ?? 8_000;
    const exponential = (this.options.retryDelayMs ?? 500) * 2 ** (attempt - 1);
    const asked = retryAfter && /^\d+$/.test(retryAfter) ? Number(retryAfter) * 1000 : 0;
    // Jitter: workers that failed together do not all come back in the same millisecond.
    return Math.min(max, Math.max(asked, exponential * (0.75 + Math.random() * 0.5)));
  }

  private failure(method: HttpMethod, url: string, opts: RequestOptions, exchange: Exchange): OpenStackApiError {
    const { detail, type } = faultOf(exchange.text);
    const requestId = exchange.headers.get('x-openstack-request-id') ?? exchange.headers.get('x-compute-request-id') ?? undefined;
    return new OpenStackApiError(this.target.service, method, readablePath(url), opts.resource, exchange.status, type, detail, requestId);
  }
}

function nextLink(body: Record<string, unknown>, key: string): string | undefined {
  const links = body[`${key}_links`];
  if (Array.isArray(links)) {
    const next = (links as Array<{ rel?: string; href?: string }>).find((l) => l.rel === 'next');
    return next?.href;
  }
  const designate = body.links as { next?: unknown } | undefined;
  return typeof designate?.next === 'string' ? designate.next : undefined;
}

function readablePath(url: string): string {
  const { pathname, search } = new URL(url);
  try {
    return decodeURIComponent(pathname + search);
  } catch {
    return pathname + search;
  }
}
