/** A typed client of OpenStack Zed's Keystone v3, Neutron v2.0, Nova v2.1 and Designate v2, over fetch. */
export * from './catalog';
export * from './connect';
export * from './designate';
export * from './errors';
export * from './http';
export * from './keystone';
export * from './neutron';
export * from './neutron-types';
export * from './nova';
export * from './poll';
