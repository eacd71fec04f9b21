/**
 * One OpenStack cloud from one configuration object: validated (each problem names its field),
 * authenticated, and its Neutron, Nova and Designate clients built on the one session.
 */
import { z } from 'zod';
import { problemsOf } from '../../../lib/schema-problems';
import type { EndpointInterface } from './catalog';
import { DesignateClient } from './designate';
import type { HttpOptions } from './http';
import { KeystoneSession } from './keystone';
import type { OpenStackAuth } from './keystone';
import { NeutronClient } from './neutron';
import { NovaClient } from './nova';

const name = z.string().min(1);

const passwordAuthSchema = z
  .strictObject({
    username: name,
    password: name,
    userDomainName: name.default('Default'),
    projectName: name.optional(),
    projectDomainName: name.default('Default'),
    projectId: name.optional(),
  })
  .refine((a) => a.projectName !== undefined || a.projectId !== undefined, { path: ['projectName'], message: 'name the project (projectName or projectId)' })
  .refine((a) => a.projectName === undefined || a.projectId === undefined, { path: ['projectId'], message: 'give projectName or projectId, not both' });

const applicationCredentialByIdSchema = z.strictObject({ applicationCredentialId: name, applicationCredentialSecret: name });

const applicationCredentialByNameSchema = z.strictObject({
  applicationCredentialName: name,
  username: name,
  userDomainName: name.default('Default'),
  applicationCredentialSecret: name,
});

/**
 * The kind of credential is read from the fields given (any applicationCredential* field: an
 * application credential), then checked against that kind alone: a union's errors would say
 * "invalid input" at `auth` and name no field.
 */
const authSchema = z.unknown().transform((value, ctx): OpenStackAuth => {
  const fields = typeof value === 'object' && value !== null ? Object.keys(value) : [];
  const schema = fields.includes('applicationCredentialId')
    ? applicationCredentialByIdSchema
    : fields.some((f) => f.startsWith('applicationCredential'))
      ? applicationCredentialByNameSchema
      : passwordAuthSchema;
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  for (const issue of result.error.issues) ctx.addIssue({ code: 'custom', message: issue.message, path: issue.path });
  return z.NEVER;
});

const httpUrl = z.url({ protocol: /^https?$/, error: 'expected an http(s) URL' });

export const openStackConnectionSchema = z.strictObject({
  /** Keystone, with or without /v3. */
  authUrl: httpUrl,
  region: name,
  interface: z.enum(['public', 'internal', 'admin']).default('public'),
  auth: authSchema,
  /** For catalogs whose URLs are not reachable from where the worker runs. */
  endpointOverride: z.partialRecord(z.enum(['network', 'compute', 'dns', 'image']), httpUrl).optional(),
  http: z
    .strictObject({
      timeoutMs: z.number().int().positive().optional(),
      tries: z.number().int().min(1).max(10).optional(),
      retryDelayMs: z.number().int().min(0).optional(),
      maxRetryDelayMs: z.number().int().min(0).optional(),
    })
    .optional(),
});

/** What a caller writes (auth is checked by kind, so its type is given here rather than inferred). */
export interface OpenStackConnectionConfig {
  authUrl: string;
  region: string;
  interface?: EndpointInterface;
  auth: OpenStackAuth;
  endpointOverride?: Partial<Record<'network' | 'compute' | 'dns' | 'image', string>>;
  http?: HttpOptions;
}

export class OpenStackConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid OpenStack connection: ${problems.join('; ')}`);
    this.name = 'OpenStackConfigError';
  }
}

export interface OpenStackConnection {
  session: KeystoneSession;
  neutron: NeutronClient;
  nova: NovaClient;
  designate: DesignateClient;
}

/** Validates, then authenticates once (bad credentials fail here, not on a first call). */
export async function connectOpenStack(config: OpenStackConnectionConfig): Promise<OpenStackConnection> {
  const parsed = openStackConnectionSchema.safeParse(config);
  if (!parsed.success) throw new OpenStackConfigError(problemsOf(parsed.error, 'connection'));
  const { authUrl, auth, region, interface: iface, endpointOverride, http } = parsed.data;
  const session = new KeystoneSession({ authUrl, auth, endpointOverride, http });
  await session.authenticate();
  const endpoint = { region, interface: iface };
  return { session, neutron: new NeutronClient(session, endpoint), nova: new NovaClient(session, endpoint), designate: new DesignateClient(session, endpoint) };
}
