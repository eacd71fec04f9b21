/**
 * Neutron v2.0's resources as this project uses them: only the fields read or written, named as
 * on the wire. Fields of API extensions a deployment may lack, or that policy shows to admins
 * only (binding:*), are optional.
 */

export type ResourceStatus = 'ACTIVE' | 'DOWN' | 'BUILD' | 'ERROR';

export interface Network {
  id: string;
  name: string;
  project_id: string;
  status: ResourceStatus;
  admin_state_up: boolean;
  subnets: string[];
  mtu: number;
  shared: boolean;
  'router:external': boolean;
  port_security_enabled?: boolean;
  description?: string;
}

export interface NetworkSpec {
  name: string;
  admin_state_up?: boolean;
  mtu?: number;
  port_security_enabled?: boolean;
  description?: string;
}

export interface AllocationPool {
  start: string;
  end: string;
}

export interface Subnet {
  id: string;
  name: string;
  project_id: string;
  network_id: string;
  cidr: string;
  ip_version: 4 | 6;
  gateway_ip: string | null;
  allocation_pools: AllocationPool[];
  enable_dhcp: boolean;
  dns_nameservers: string[];
}

export interface SubnetSpec {
  network_id: string;
  cidr: string;
  name?: string;
  /** null: no gateway; left out: Neutron takes the first address of the CIDR. */
  gateway_ip?: string | null;
  allocation_pools?: AllocationPool[];
  /** Default false here (Neutron's is true): addresses are the VI's own, not a DHCP agent's. */
  enable_dhcp?: boolean;
  /** Default 4. */
  ip_version?: 4 | 6;
  dns_nameservers?: string[];
}

export interface FixedIp {
  subnet_id: string;
  ip_address: string;
}

export interface Port {
  id: string;
  name: string;
  project_id: string;
  network_id: string;
  mac_address: string;
  fixed_ips: FixedIp[];
  /** N/A: a port whose status Neutron does not track (some router ports). */
  status: ResourceStatus | 'N/A';
  admin_state_up: boolean;
  security_groups: string[];
  /** '' for a port no one claims; 'compute:nova', 'network:router_interface', 'network:dhcp', … */
  device_owner: string;
  device_id: string;
  port_security_enabled?: boolean;
  'binding:host_id'?: string;
  /** 'unbound' until a host binds it; 'binding_failed' when the host's agent could not. */
  'binding:vif_type'?: string;
  'binding:vnic_type'?: string;
  description?: string;
}

export interface PortSpec {
  network_id: string;
  name?: string;
  /** An address on a subnet, or (without ip_address) any free address of it. */
  fixed_ips?: Array<{ subnet_id: string; ip_address?: string }>;
  mac_address?: string;
  security_groups?: string[];
  admin_state_up?: boolean;
  device_owner?: string;
  device_id?: string;
  'binding:host_id'?: string;
  port_security_enabled?: boolean;
  description?: string;
}

export type PortUpdate = Partial<Pick<PortSpec, 'name' | 'admin_state_up' | 'security_groups' | 'device_owner' | 'device_id' | 'binding:host_id' | 'port_security_enabled'>>;

export interface SecurityGroupRule {
  id: string;
  security_group_id: string;
  direction: 'ingress' | 'egress';
  ethertype: 'IPv4' | 'IPv6';
  /** null: any protocol. Names ('tcp', 'udp', 'icmp') or numbers as strings. */
  protocol: string | null;
  port_range_min: number | null;
  port_range_max: number | null;
  remote_ip_prefix: string | null;
  remote_group_id: string | null;
  description?: string;
}

export interface SecurityGroupRuleSpec {
  security_group_id: string;
  /** Default 'ingress'. */
  direction?: 'ingress' | 'egress';
  /** Default 'IPv4'. */
  ethertype?: 'IPv4' | 'IPv6';
  protocol?: string | null;
  port_range_min?: number | null;
  port_range_max?: number | null;
  remote_ip_prefix?: string | null;
  remote_group_id?: string | null;
  description?: string;
}

export interface SecurityGroup {
  id: string;
  name: string;
  description: string;
  project_id: string;
  security_group_rules: SecurityGroupRule[];
}

export interface RouterGateway {
  network_id: string;
  enable_snat?: boolean;
  external_fixed_ips?: Array<{ subnet_id?: string; ip_address?: string }>;
}

export interface Router {
  id: string;
  name: string;
  project_id: string;
  status: ResourceStatus;
  admin_state_up: boolean;
  external_gateway_info: RouterGateway | null;
}

export interface RouterSpec {
  name: string;
  external_gateway_info?: RouterGateway;
  admin_state_up?: boolean;
  description?: string;
}

/** What add_router_interface answers: the router's new port on the subnet. */
export interface RouterInterface {
  id: string;
  subnet_id: string;
  port_id: string;
  network_id: string;
}

export interface FloatingIp {
  id: string;
  project_id: string;
  floating_ip_address: string;
  floating_network_id: string;
  /** null while not associated. */
  port_id: string | null;
  fixed_ip_address: string | null;
  router_id: string | null;
  status: 'ACTIVE' | 'DOWN' | 'ERROR';
  description?: string;
}

export interface FloatingIpSpec {
  floating_network_id: string;
  /** A given address on the external network (admins only, by default policy). */
  floating_ip_address?: string;
  subnet_id?: string;
  port_id?: string;
  fixed_ip_address?: string;
  description?: string;
}

/** Counts per project; -1 is unlimited. */
export interface NeutronQuota {
  network: number;
  subnet: number;
  port: number;
  router: number;
  floatingip: number;
  security_group: number;
  security_group_rule: number;
}
