import path from 'node:path';

/** Where scripts/setup.sh installs MigraVI's private dependencies (same default as scripts/env.sh). */
export const depsDir = process.env.MIGRAVI_DEPS ?? '/var/lib/migravi/deps';
export const criuPath = path.join(depsDir, 'bin', 'criu');
/** User-space WireGuard (the kernel here has none): the stretch's encryption across the WAN. */
export const wireguardGoPath = path.join(depsDir, 'bin', 'wireguard-go');
export const temporalCliPath = path.join(depsDir, 'bin', 'temporal');
/** The demo container rootfs: busybox and the kv-server, built by setup. */
export const demoRootfs = path.join(depsDir, 'images', 'busybox-rootfs');
/** Debian's nginx-light with its dependencies and demo/nginx/nginx.conf, built by setup. */
export const nginxRootfs = path.join(depsDir, 'images', 'nginx-rootfs');
/** Debian's PostgreSQL 15 (server and psql) with demo/postgres/start-postgres.sh, built by setup. */
export const postgresRootfs = path.join(depsDir, 'images', 'postgres-rootfs');
/** Root of the repository (this file is compiled to dist/lib/paths.js). */
export const repoRoot = path.resolve(__dirname, '..', '..');
/** Runtime state of testbeds: one directory per testbed id. */
export const testbedsDir = process.env.MIGRAVI_STATE ?? '/var/lib/migravi/testbeds';
