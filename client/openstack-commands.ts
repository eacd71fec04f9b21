/**
 * `migravi openstack up|down|status`: the development OpenStack on this machine (Debian's
 * OpenStack Zed on MariaDB and RabbitMQ, bound to loopback), for tests and for users without an
 * OpenStack of their own. Its two projects are two clouds.
 */
import type { Command } from 'commander';
import { Output, type Globals } from './cli-common';
import { EXIT } from './exit-codes';

const dirOption = (cmd: Command) => cmd.option('--dir <dir>', 'where its configuration, databases, logs and credentials live', '/var/lib/migravi/openstack');

export function openstackCommands(cli: Command, globals: Globals): void {
  const openstack = cli.command('openstack').description('a real OpenStack control plane on this machine (Keystone, Neutron, Nova with the fake driver, Designate), two projects as two clouds');
  dirOption(openstack.command('up').description('start its databases, broker and every service (the set-up installed the packages); idempotent: seconds when it ran before'))
    .option('--bind <ip>', 'the address every service listens on', '127.0.0.1')
    .action(async (o: { dir: string; bind: string }, cmd: Command) => {
      const out = new Output(globals(cmd).json);
      const { devCloudUp } = await import('../providers/openstack/dev-cloud/dev-cloud');
      const credentials = await devCloudUp({ dir: o.dir, bind: o.bind, log: (line) => out.line(`[openstack] ${line}`) });
      out.result(credentials, () => [
        `Keystone ${credentials.authUrl} (region ${credentials.region}); clouds: ${Object.keys(credentials.clouds).join(', ')}`,
        `credentials: ${o.dir}/clouds.json`,
      ]);
    });
  dirOption(openstack.command('down').description('stop every process `up` started (by PID); the databases stay unless --purge'))
    .option('--purge', 'remove the databases, keys and credentials too', false)
    .action(async (o: { dir: string; purge: boolean }, cmd: Command) => {
      const out = new Output(globals(cmd).json);
      const { devCloudDown } = await import('../providers/openstack/dev-cloud/dev-cloud');
      const stopped = await devCloudDown({ dir: o.dir, purge: o.purge, log: (line) => out.line(`[openstack] ${line}`) });
      out.result({ stopped, purged: o.purge }, () => [stopped.length ? `stopped ${stopped.length} processes` : 'nothing was running']);
    });
  dirOption(openstack.command('status').description('each process (pid, running, log); exit 1 when not all run'))
    .action(async (o: { dir: string }, cmd: Command) => {
      const { devCloudStatus } = await import('../providers/openstack/dev-cloud/dev-cloud');
      const status = devCloudStatus({ dir: o.dir });
      new Output(globals(cmd).json).result(status, () => [
        ...status.processes.map((p) => `  ${p.name.padEnd(20)} ${(p.pid ? `pid ${p.pid}` : '-').padEnd(10)} ${p.running ? 'running' : 'NOT RUNNING'}  log ${p.log}`),
        status.credentials ? `credentials: ${status.credentials}` : 'no credentials yet: migravi openstack up',
      ]);
      if (!status.processes.every((p) => p.running)) process.exitCode = EXIT.failed;
    });
}
