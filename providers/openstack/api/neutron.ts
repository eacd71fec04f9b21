/**
 * Neutron v2.0: the networks, addresses, ports, security groups, routers and floating IPs a VI is
 * given in a cloud. Lists follow pagination; deletes can take an already-gone resource as done.
 */
import type { EndpointOptions } from './catalog';
import { isNotFound } from './errors';
import type { DeleteOptions, OpenStackHttp, RequestOptions } from './http';
import type { KeystoneSession } from './keystone';
import type {
  FloatingIp,
  FloatingIpSpec,
  Network,
  NetworkSpec,
  NeutronQuota,
  Port,
  PortSpec,
  PortUpdate,
  Router,
  RouterInterface,
  RouterSpec,
  SecurityGroup,
  SecurityGroupRule,
  SecurityGroupRuleSpec,
  Subnet,
  SubnetSpec,
} from './neutron-types';

const named = (kind: string, name: string | undefined) => (name ? `${kind} "${name}"` : kind);

export class NeutronClient {
  private readonly http: OpenStackHttp;

  constructor(session: KeystoneSession, endpoint: EndpointOptions = {}) {
    this.http = session.client('neutron', 'network', endpoint);
  }

  // Networks

  listNetworks(filter: { name?: string; 'router:external'?: boolean } = {}): Promise<Network[]> {
    return this.http.listAll<Network>('/networks', 'networks', { query: filter });
  }

  async getNetwork(id: string): Promise<Network> {
    return (await this.http.get<{ network: Network }>(`/networks/${id}`, { resource: `network ${id}` })).network;
  }

  async createNetwork(spec: NetworkSpec): Promise<Network> {
    return (await this.http.post<{ network: Network }>('/networks', { network: spec }, { resource: named('network', spec.name) })).network;
  }

  deleteNetwork(id: string, opts: DeleteOptions = {}): Promise<boolean> {
    return this.http.delete(`/networks/${id}`, { ...opts, resource: `network ${id}` });
  }

  // Subnets

  listSubnets(filter: { network_id?: string; name?: string; cidr?: string } = {}): Promise<Subnet[]> {
    return this.http.listAll<Subnet>('/subnets', 'subnets', { query: filter });
  }

  async createSubnet(spec: SubnetSpec): Promise<Subnet> {
    const subnet = { ...spec, ip_version: spec.ip_version ?? 4, enable_dhcp: spec.enable_dhcp ?? false };
    const resource = `${named('subnet', spec.name)} ${spec.cidr} on network ${spec.network_id}`;
    return (await this.http.post<{ subnet: Subnet }>('/subnets', { subnet }, { resource })).subnet;
  }

  deleteSubnet(id: string, opts: DeleteOptions = {}): Promise<boolean> {
    return this.http.delete(`/subnets/${id}`, { ...opts, resource: `subnet ${id}` });
  }

  // Ports

  listPorts(filter: { network_id?: string; name?: string; device_id?: string; device_owner?: string; mac_address?: string } = {}): Promise<Port[]> {
    return this.http.listAll<Port>('/ports', 'ports', { query: filter });
  }

  async getPort(id: string): Promise<Port> {
    return (await this.http.get<{ port: Port }>(`/ports/${id}`, { resource: `port ${id}` })).port;
  }

  async createPort(spec: PortSpec): Promise<Port> {
    const resource = `${named('port', spec.name)} on network ${spec.network_id}${spec.fixed_ips?.length ? ` at ${spec.fixed_ips.map((f) => f.ip_address ?? f.subnet_id).join(', ')}` : ''}`;
    return (await this.http.post<{ port: Port }>('/ports', { port: spec }, { resource })).port;
  }

  async updatePort(id: string, update: PortUpdate): Promise<Port> {
    return (await this.http.put<{ port: Port }>(`/ports/${id}`, { port: update }, { resource: `port ${id}` })).port;
  }

  deletePort(id: string, opts: DeleteOptions = {}): Promise<boolean> {
    return this.http.delete(`/ports/${id}`, { ...opts, resource: `port ${id}` });
  }

  // Security groups

  listSecurityGroups(filter: { name?: string } = {}): Promise<SecurityGroup[]> {
    return this.http.listAll<SecurityGroup>('/security-groups', 'security_groups', { query: filter });
  }

  /** The new group comes with Neutron's default rules: egress to anywhere, IPv4 and IPv6 (in its security_group_rules). */
  async createSecurityGroup(spec: { name: string; description?: string }): Promise<SecurityGroup> {
    const body = { security_group: spec };
    return (await this.http.post<{ security_group: SecurityGroup }>('/security-groups', body, { resource: named('security group', spec.name) })).security_group;
  }

  deleteSecurityGroup(id: string, opts: DeleteOptions = {}): Promise<boolean> {
    return this.http.delete(`/security-groups/${id}`, { ...opts, resource: `security group ${id}` });
  }

  listSecurityGroupRules(securityGroupId: string): Promise<SecurityGroupRule[]> {
    return this.http.listAll<SecurityGroupRule>('/security-group-rules', 'security_group_rules', { query: { security_group_id: securityGroupId } });
  }

  /** A rule equal to one the group has is a 409 SecurityGroupRuleExists (see isConflict). */
  async createSecurityGroupRule(spec: SecurityGroupRuleSpec): Promise<SecurityGroupRule> {
    const rule = { ...spec, direction: spec.direction ?? 'ingress', ethertype: spec.ethertype ?? 'IPv4' };
    const ports = spec.port_range_min != null ? ` ${spec.port_range_min}${spec.port_range_max !== spec.port_range_min ? `-${spec.port_range_max}` : ''}` : '';
    const resource = `${rule.direction} ${spec.protocol ?? 'any'}${ports} from ${spec.remote_ip_prefix ?? spec.remote_group_id ?? 'anywhere'} in security group ${spec.security_group_id}`;
    return (await this.http.post<{ security_group_rule: SecurityGroupRule }>('/security-group-rules', { security_group_rule: rule }, { resource })).security_group_rule;
  }

  deleteSecurityGroupRule(id: string, opts: DeleteOptions = {}): Promise<boolean> {
    return this.http.delete(`/security-group-rules/${id}`, { ...opts, resource: `security group rule ${id}` });
  }

  // Routers

  listRouters(filter: { name?: string } = {}): Promise<Router[]> {
    return this.http.listAll<Router>('/routers', 'routers', { query: filter });
  }

  async createRouter(spec: RouterSpec): Promise<Router> {
    return (await this.http.post<{ router: Router }>('/routers', { router: spec }, { resource: named('router', spec.name) })).router;
  }

  /** PUT in name only: a second add of the same subnet is a 400, so it is not retried blindly. */
  addRouterInterface(routerId: string, subnetId: string): Promise<RouterInterface> {
    return this.http.put<RouterInterface>(`/routers/${routerId}/add_router_interface`, { subnet_id: subnetId }, this.interfaceOptions(routerId, subnetId));
  }

  /** With ifExists, a router that no longer has the subnet (404) is success. */
  async removeRouterInterface(routerId: string, subnetId: string, opts: { ifExists?: boolean } = {}): Promise<boolean> {
    try {
      await this.http.put(`/routers/${routerId}/remove_router_interface`, { subnet_id: subnetId }, this.interfaceOptions(routerId, subnetId));
      return true;
    } catch (err) {
      if (opts.ifExists && isNotFound(err)) return false;
      throw err;
    }
  }

  deleteRouter(id: string, opts: DeleteOptions = {}): Promise<boolean> {
    return this.http.delete(`/routers/${id}`, { ...opts, resource: `router ${id}` });
  }

  // Floating IPs

  listFloatingIps(filter: { floating_ip_address?: string; port_id?: string; floating_network_id?: string } = {}): Promise<FloatingIp[]> {
    return this.http.listAll<FloatingIp>('/floatingips', 'floatingips', { query: filter });
  }

  async createFloatingIp(spec: FloatingIpSpec): Promise<FloatingIp> {
    const resource = `floating IP ${spec.floating_ip_address ?? ''}${spec.floating_ip_address ? ' ' : ''}on network ${spec.floating_network_id}`;
    return (await this.http.post<{ floatingip: FloatingIp }>('/floatingips', { floatingip: spec }, { resource })).floatingip;
  }

  /** fixed_ip_address picks among the port's addresses; a port with one needs none. */
  async associateFloatingIp(id: string, target: { port_id: string; fixed_ip_address?: string }): Promise<FloatingIp> {
    const resource = `floating IP ${id} to port ${target.port_id}`;
    return (await this.http.put<{ floatingip: FloatingIp }>(`/floatingips/${id}`, { floatingip: target }, { resource })).floatingip;
  }

  async disassociateFloatingIp(id: string): Promise<FloatingIp> {
    return (await this.http.put<{ floatingip: FloatingIp }>(`/floatingips/${id}`, { floatingip: { port_id: null } }, { resource: `floating IP ${id}` })).floatingip;
  }

  deleteFloatingIp(id: string, opts: DeleteOptions = {}): Promise<boolean> {
    return this.http.delete(`/floatingips/${id}`, { ...opts, resource: `floating IP ${id}` });
  }

  // Quotas (reading another project's, and any change, are admin's)

  async getQuota(projectId: string): Promise<NeutronQuota> {
    return (await this.http.get<{ quota: NeutronQuota }>(`/quotas/${projectId}`, { resource: `quotas of project ${projectId}` })).quota;
  }

  async updateQuota(projectId: string, quota: Partial<NeutronQuota>): Promise<NeutronQuota> {
    return (await this.http.put<{ quota: NeutronQuota }>(`/quotas/${projectId}`, { quota }, { resource: `quotas of project ${projectId}` })).quota;
  }

  private interfaceOptions(routerId: string, subnetId: string): RequestOptions {
    return { resource: `interface of router ${routerId} on subnet ${subnetId}`, idempotent: false };
  }
}
