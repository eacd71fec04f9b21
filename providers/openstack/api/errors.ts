/**
 * What an OpenStack call that failed says: which service, which request, about which resource,
 * and OpenStack's own words. Each service wraps its error text differently; faultOf reads them all
 * so a message never ends in a bare "409 Conflict".
 */

export type OpenStackService = 'keystone' | 'neutron' | 'nova' | 'designate';

/** The service answered, with a status that is not a success. */
export class OpenStackApiError extends Error {
  constructor(
    readonly service: OpenStackService,
    readonly method: string,
    readonly path: string,
    readonly resource: string | undefined,
    readonly status: number,
    /** OpenStack's kind of error when it names one: Neutron's "OverQuota", Nova's "itemNotFound", Designate's "duplicate_zone". */
    readonly type: string | undefined,
    /** OpenStack's own error text. */
    readonly detail: string,
    readonly requestId: string | undefined,
  ) {
    super(
      `${service} ${method} ${path}${resource ? ` (${resource})` : ''} → ${status}${type ? ` ${type}` : ''}: ${detail}` +
        (requestId ? ` [${requestId}]` : ''),
    );
    this.name = 'OpenStackApiError';
  }
}

/** No answer at all: the connection was refused or reset, or the request timed out. */
export class OpenStackConnectionError extends Error {
  constructor(
    readonly service: OpenStackService,
    readonly method: string,
    readonly url: string,
    readonly resource: string | undefined,
    /** ECONNREFUSED, ECONNRESET, TimeoutError, ... */
    readonly code: string,
    tries: number,
    cause: unknown,
  ) {
    // undici's own message is "fetch failed"; the socket's is in its cause.
    const e = cause as { message?: string; cause?: { message?: string } } | undefined;
    const why = e?.cause?.message ?? e?.message ?? String(cause);
    super(`${service} ${method} ${url}${resource ? ` (${resource})` : ''}: no answer after ${tries} ${tries === 1 ? 'try' : 'tries'}: ${why}`, { cause });
    this.name = 'OpenStackConnectionError';
  }
}

/** Keystone refused the credentials. The message names who asked, never the password or secret. */
export class OpenStackAuthError extends Error {
  constructor(
    readonly authUrl: string,
    readonly who: string,
    readonly detail: string,
    cause?: unknown,
  ) {
    super(`Keystone at ${authUrl} refused the credentials of ${who}: ${detail}`, { cause });
    this.name = 'OpenStackAuthError';
  }
}

/** A wait on a resource's status ended without the status: the resource failed, or the deadline passed. */
export class OpenStackWaitError extends Error {
  constructor(
    readonly outcome: 'failed' | 'timeout',
    message: string,
  ) {
    super(message);
    this.name = 'OpenStackWaitError';
  }
}

export function isNotFound(err: unknown): boolean {
  return err instanceof OpenStackApiError && err.status === 404;
}

export function isConflict(err: unknown): boolean {
  return err instanceof OpenStackApiError && err.status === 409;
}

/** Neutron says 409 OverQuota; Nova 403 forbidden (413 overLimit for some resources and older releases) with the word in its text; Designate 413 over_quota. */
export function isQuotaError(err: unknown): boolean {
  if (!(err instanceof OpenStackApiError)) return false;
  switch (err.service) {
    case 'neutron':
      return err.status === 409 && err.type === 'OverQuota';
    case 'nova':
      return (err.status === 403 || err.status === 413) && /quota/i.test(err.detail);
    case 'designate':
      return err.status === 413 || err.type === 'over_quota';
    default:
      return false;
  }
}

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const str = (v: unknown): string | undefined => (typeof v === 'string' && v ? v : undefined);

/** OpenStack's error text and kind from a response body, whichever service wrote it. */
export function faultOf(text: string): { detail: string; type?: string } {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    // webob and uwsgi answer some errors in HTML or plain text.
    const plain = text.replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim();
    return { detail: plain.slice(0, 300) || '(empty answer)' };
  }
  if (!isObject(body)) return { detail: text.slice(0, 300) };
  // Neutron: {NeutronError: {type, message, detail}}
  const neutron = body.NeutronError;
  if (isObject(neutron)) return { detail: str(neutron.message) ?? JSON.stringify(neutron), type: str(neutron.type) };
  if (typeof neutron === 'string') return { detail: neutron };
  // Keystone: {error: {code, message, title}}
  if (isObject(body.error)) return { detail: str(body.error.message) ?? JSON.stringify(body.error), type: str(body.error.title) };
  // Designate: {code, type, message, request_id}
  if (str(body.message)) return { detail: body.message as string, type: str(body.type) };
  // Nova: one key naming the kind, {badRequest: {code, message}}, {itemNotFound: ...}, {overLimit: ...}
  const keys = Object.keys(body);
  if (keys.length === 1 && isObject(body[keys[0]!]) && str((body[keys[0]!] as Json).message)) {
    return { detail: (body[keys[0]!] as Json).message as string, type: keys[0] };
  }
  return { detail: text.slice(0, 300) };
}
