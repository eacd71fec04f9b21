/**
 * Which URL a service is reached at: the token's catalog, by service type, region and interface,
 * and the root this directory's clients expect (…/v2.0 for Neutron, …/v2.1[/project] for Nova,
 * …/v2 for Designate), whichever way the deployment registered it.
 */

export type EndpointInterface = 'public' | 'internal' | 'admin';

export interface CatalogEndpoint {
  interface: EndpointInterface;
  /** region_id is the current field; region its deprecated twin, still sent. */
  region_id?: string | null;
  region?: string | null;
  url: string;
}

export interface CatalogService {
  type: string;
  name?: string;
  endpoints: CatalogEndpoint[];
}

export interface EndpointOptions {
  /** Needed when the service is offered in more than one region. */
  region?: string;
  /** Default 'public'. */
  interface?: EndpointInterface;
}

const regionOf = (e: CatalogEndpoint) => e.region_id ?? e.region ?? '(no region)';

/** The catalog in one line, for the error that says what was not found. */
export function describeCatalog(catalog: CatalogService[]): string {
  if (!catalog.length) return 'the catalog is empty (an unscoped token? name a project)';
  const services = catalog.map((s) => {
    const byRegion = new Map<string, string[]>();
    for (const e of s.endpoints) byRegion.set(regionOf(e), [...(byRegion.get(regionOf(e)) ?? []), e.interface]);
    return `${s.type} (${[...byRegion].map(([region, ifaces]) => `${region}: ${ifaces.join(', ')}`).join('; ')})`;
  });
  return `the catalog has: ${services.join(', ')}`;
}

/** The endpoint's URL as registered; throws naming what was asked and what the catalog offers. */
export function selectEndpoint(catalog: CatalogService[], serviceType: string, opts: EndpointOptions = {}): string {
  const iface = opts.interface ?? 'public';
  const candidates = catalog
    .filter((s) => s.type === serviceType)
    .flatMap((s) => s.endpoints)
    .filter((e) => e.interface === iface && (opts.region === undefined || regionOf(e) === opts.region));
  const asked = `"${serviceType}" endpoint${opts.region !== undefined ? ` in region "${opts.region}"` : ''} (interface ${iface})`;
  if (!candidates.length) throw new Error(`no ${asked}; ${describeCatalog(catalog)}`);
  const regions = [...new Set(candidates.map(regionOf))];
  if (regions.length > 1) throw new Error(`more than one ${asked}: regions ${regions.join(', ')}; name the region`);
  return candidates[0]!.url;
}

/** The root the clients append their paths to, from an endpoint as deployments register it. */
export function serviceRoot(serviceType: string, url: string): string {
  const base = url.replace(/\/+$/, '');
  switch (serviceType) {
    case 'identity':
      return /\/v3$/.test(base) ? base : `${base}/v3`;
    case 'network':
      // Neutron is registered without its version (http://host:9696); its API lives under /v2.0.
      return /\/v2\.0$/.test(base) ? base : `${base}/v2.0`;
    case 'compute':
      // Registered as …/v2.1, …/v2.1/<project id>, the legacy …/v2/<project id> (no microversions there), or bare.
      if (/\/v2\.1(\/|$)/.test(base)) return base;
      if (/\/v2(\/|$)/.test(base)) return base.replace(/\/v2(\/|$)/, '/v2.1$1');
      return `${base}/v2.1`;
    case 'dns':
      return /\/v2$/.test(base) ? base : `${base}/v2`;
    default:
      return base;
  }
}
