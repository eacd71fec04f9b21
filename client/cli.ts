#!/usr/bin/env node
/**
 * `migravi`, the operator's command line (installed on the PATH by the set-up; `migravi --help`,
 * and `--help` on every command). Input files are read and validated before anything connects
 * to Temporal; the exit code says what happened (client/exit-codes.ts). `--json` prints one JSON
 * document on stdout for scripts, the human lines going to stderr.
 *
 * Commander (14, the last line for Node 20) parses it: no dependencies, its own types, help and
 * errors for every subcommand generated from the same declarations that parse them.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Client } from '@temporalio/client';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import YAML from 'yaml';
import { loadPlanFile } from '../lib/plan-file';
import type { MigrationReport } from '../lib/types';
import type { OperatorAnswer } from '../workflows';
import { loadViFile } from '../lib/vi-file';
import { allocateAddresses } from '../lib/vi-spec';
import { categoryChartSvg } from './category-chart';
import { Output, positive, withClient, type GlobalOptions, type Globals } from './cli-common';
import { evacuationCommands } from './evacuation-commands';
import { openstackCommands } from './openstack-commands';
import { securityCommands } from './security-commands';
import { EXIT, EXIT_CODES_HELP, exitFor } from './exit-codes';
import { formatReport } from './format-report';
import { cloudsDown, cloudsStatus, cloudsUp, type CloudsStatus } from '../providers/local/clouds-service';
import { DEFAULT_HOST_LINK } from '../providers/local/testbed';
import { abortMigration, approveCutover, confirmDestinationGone, deployVi, describeCloud, liveProgress, removeVi, startMigration, watchMigration } from './migravi-client';
import { describeTransfer, progressView } from './progress-view';

function program(): Command {
  const cli = new Command('migravi')
    .description('Live migration of a running virtual infrastructure between clouds, orchestrated by Temporal.')
    .addOption(new Option('--temporal <host:port>', 'Temporal frontend').env('TEMPORAL_ADDRESS').default('127.0.0.1:7233'))
    .addOption(new Option('--namespace <name>', 'Temporal namespace').env('TEMPORAL_NAMESPACE').default('default'))
    .addOption(new Option('--payload-keys <file>', 'the payload key ring (encrypts every payload; the workers\' file)').env('MIGRAVI_PAYLOAD_KEYS'))
    .addOption(new Option('--temporal-tls-ca <file>', 'mutual TLS: the authority the server\'s certificate is signed by (with --temporal-tls-cert and --temporal-tls-key)').env('MIGRAVI_TEMPORAL_TLS_CA'))
    .addOption(new Option('--temporal-tls-cert <file>', 'mutual TLS: this client\'s certificate').env('MIGRAVI_TEMPORAL_TLS_CERT'))
    .addOption(new Option('--temporal-tls-key <file>', 'mutual TLS: its key (mode 600)').env('MIGRAVI_TEMPORAL_TLS_KEY'))
    .addOption(new Option('--temporal-tls-server-name <name>', 'mutual TLS: the name the server\'s certificate must hold (default: the address\'s host)').env('MIGRAVI_TEMPORAL_TLS_SERVER_NAME'))
    .option('--json', 'print one JSON document on stdout (human lines go to stderr)', false)
    .addHelpText('after', `\n${EXIT_CODES_HELP}`)
    .configureHelp({ showGlobalOptions: true })
    .showHelpAfterError('(add --help for usage)')
    .exitOverride();
  const globals = (cmd: Command) => cmd.optsWithGlobals<GlobalOptions>();
  migrationCommands(cli, globals);
  viCommands(cli, globals);
  cloudsCommands(cli, globals);
  evacuationCommands(cli, globals);
  openstackCommands(cli, globals);
  securityCommands(cli, globals);
  return cli;
}

function migrationCommands(cli: Command, globals: Globals): void {
  cli.command('migrate').description('start a migration from a plan file and follow it to its report').argument('<plan>', 'plan file (YAML or JSON)')
    .option('--no-wait', 'print the migration id and return once it has started')
    .action(async (file: string, opts: { wait: boolean }, cmd: Command) => {
      const g = globals(cmd);
      const out = new Output(g.json);
      const plan = await loadPlanFile(file); // validated before anything connects
      await withClient(g, async (client) => {
        const handle = await startMigration(client, plan);
        out.line(`started ${handle.workflowId}`);
        if (!opts.wait) return out.result({ workflowId: handle.workflowId }, () => []);
        const view = progressView(g.json ? process.stderr : process.stdout);
        const report = await watchMigration(handle, (live) => view.update(live)).finally(() => view.stop());
        out.result({ workflowId: handle.workflowId, report }, () => [formatReport(report)]);
      });
    });
  cli.command('progress').description("a migration's state, and each container's stage and running copies (bytes of total, rate, time left)").argument('<id>', 'migration (workflow) id')
    .action(async (id: string, _o: unknown, cmd: Command) => {
      const g = globals(cmd);
      const progress = await withClient(g, (client) => liveProgress(client.workflow.getHandle(id)));
      new Output(g.json).result(progress, () => [
        `${id}: ${progress.state}, ${progress.phase}${progress.container ? ` (${progress.container})` : ''}; ${(progress.bytesMoved / 1048576).toFixed(1)} MiB moved${progress.error ? `\n${progress.error}` : ''}`,
        ...progress.containers.map((c) => `  ${c.name}: ${c.state === 'moving' ? c.phase : c.state}${c.transfers.map((t) => `; ${describeTransfer(t)}`).join('')}`),
      ]);
    });
  const requestCommand = (name: string, description: string, send: (handle: ReturnType<Client['workflow']['getHandle']>, rest: string[]) => Promise<OperatorAnswer | void>, extra?: [string, string]) => {
    const command = cli.command(name).description(description).argument('<id>', 'migration (workflow) id');
    if (extra) command.argument(...extra);
    command.action(async (id: string, ...args: unknown[]) => {
      const cmd = args[args.length - 1] as Command;
      const g = globals(cmd);
      const answer = await withClient(g, (client) => send(client.workflow.getHandle(id), cmd.args.slice(1)));
      new Output(g.json).result({ workflowId: id, request: name, ...(answer ?? { sent: true }) }, () => [answer ? `${name}: accepted by ${id} (${answer.state}, ${answer.phase})` : `${name}: sent to ${id}`]);
    });
  };
  requestCommand('approve', 'let a migration waiting for approval (options.approveCutover) freeze and move; refused (exit 6) when there is nothing to approve', (h) => approveCutover(h));
  requestCommand('abort', 'stop a migration before its commit point and roll it back; refused (exit 6) once past it', (h, rest) => abortMigration(h, rest.join(' ') || 'aborted by the operator (CLI)'), ['[reason...]', 'why (it goes into the failure and the report)']);
  requestCommand('confirm-gone', "for a migration frozen at its source: you made sure the destination's copy is gone, the source may resume", (h) => confirmDestinationGone(h));
  cli.command('report').description("a finished migration's report, printed and written as JSON and an SVG chart").argument('<id>', 'migration (workflow) id')
    .option('--out <dir>', 'where the JSON and SVG files go', '.')
    .action(async (id: string, opts: { out: string }, cmd: Command) => {
      const g = globals(cmd);
      const report = await withClient(g, async (client) => (await client.workflow.getHandle(id).result()) as MigrationReport);
      await mkdir(opts.out, { recursive: true });
      const base = path.join(opts.out, id);
      await writeFile(`${base}.json`, JSON.stringify(report, null, 2));
      await writeFile(`${base}.svg`, categoryChartSvg(report.categories, `Migration ${report.plan}: ${report.source} → ${report.destination}, ${(report.wallMs / 1000).toFixed(1)} s`));
      new Output(g.json).result({ report, files: [`${base}.json`, `${base}.svg`] }, () => [formatReport(report), `written: ${base}.json, ${base}.svg`]);
    });
}

function viCommands(cli: Command, globals: Globals): void {
  cli.command('validate-vi').description('check a VI description offline and print it with the addresses it will get').argument('<vi-file>', 'VI description (YAML or JSON)')
    .action(async (file: string, _o: unknown, cmd: Command) => {
      const allocated = allocateAddresses(await loadViFile(file));
      new Output(globals(cmd).json).result(allocated, () => [YAML.stringify(allocated).trimEnd()]);
    });
  cli.command('list').description('the VIs, networks and containers a cloud hosts, with their state read from its runtime').argument('<cloud>', 'cloud name')
    .action(async (cloud: string, _o: unknown, cmd: Command) => {
      const g = globals(cmd);
      const listing = await withClient(g, (client) => describeCloud(client, cloud));
      new Output(g.json).result(listing, () => [
        `${listing.cloud}:`,
        ...listing.networks.map((n) => `  network ${n.name} ${n.cidr}${n.vi ? ` (VI ${n.vi})` : ''}${n.stretchedTo.length ? ` stretched to ${n.stretchedTo.join(', ')}` : ''}`),
        `  ${'VI'.padEnd(10)} ${'CONTAINER'.padEnd(12)} ${'STATE'.padEnd(8)} ADDRESSES`,
        ...listing.containers.map((c) => `  ${(c.vi ?? '-').padEnd(10)} ${c.name.padEnd(12)} ${c.status.padEnd(8)} ${c.addresses.join(' ')}${c.floatingIp ? ` public:${c.floatingIp}` : ''}`),
      ]);
    });
  cli.command('deploy').description('deploy a VI description into a cloud (again with the same file: no change)').argument('<cloud>', 'cloud name').argument('<vi-file>', 'VI description (YAML or JSON)')
    .action(async (cloud: string, file: string, _o: unknown, cmd: Command) => {
      const g = globals(cmd);
      const out = new Output(g.json);
      const vi = await loadViFile(file); // validated before anything connects
      out.line(`deploying VI ${vi.name} (${vi.containers.length} containers, ${vi.networks.length} networks) into ${cloud}…`);
      const outcome = await withClient(g, (client) => deployVi(client, cloud, vi));
      out.result(outcome, () => [
        ...outcome.containers.map((c) => `  ${c.name.padEnd(12)} ${(outcome.started.includes(c.name) ? 'started' : 'unchanged').padEnd(10)} ${c.addresses.join(' ')}`),
        ...(outcome.networksCreated.length ? [`  networks created: ${outcome.networksCreated.join(', ')}`] : []),
      ]);
    });
  cli.command('remove').description("remove a VI's containers, ports, rules and networks from a cloud").argument('<cloud>', 'cloud name').argument('<vi>', 'VI name')
    .option('--delete-volumes', "remove its volumes' files too", false)
    .action(async (cloud: string, vi: string, opts: { deleteVolumes: boolean }, cmd: Command) => {
      const g = globals(cmd);
      const outcome = await withClient(g, (client) => removeVi(client, cloud, vi, { deleteVolumes: opts.deleteVolumes }));
      new Output(g.json).result(outcome, () => [
        `removed VI ${outcome.vi} from ${outcome.cloud}: containers ${outcome.containers.join(', ') || 'none'}; networks ${outcome.networks.join(', ') || 'none'}`,
        ...(outcome.volumesKept.length ? [`  volumes kept (--delete-volumes removes them): ${outcome.volumesKept.join(', ')}`] : []),
        ...(outcome.volumesDeleted.length ? [`  volumes deleted: ${outcome.volumesDeleted.join(', ')}`] : []),
      ]);
    });
}

function cloudsCommands(cli: Command, globals: Globals): void {
  const clouds = cli.command('clouds').description('the embedded clouds on this machine, with Temporal and every worker, as a service');
  const id = () => new Option('--id <id>', "the testbed's id (namespaces, links and state are named after it)").default('migravi');
  const say = (g: GlobalOptions) => (line: string) => new Output(g.json).line(`[clouds] ${line}`);
  clouds.command('up').description('bring the clouds up (or keep those that run, with their VIs), the Temporal dev server and the supervised workers')
    .addOption(id())
    .option('--clouds <names>', 'the clouds, comma-separated', 'cloud-a,cloud-b')
    .option('--wan-mbit <rate>', "each cloud's WAN link (Mbit/s)", '1000')
    .option('--fresh', 'take down what runs under this id first: empty clouds', false)
    .option('--temporal-port <port>', "the Temporal server's port", '7233')
    .option('--ui-port <port>', "its Web UI's port", '8233')
    .option('--codec-port <port>', "the Web UI's codec endpoint (loopback; decodes the encrypted payloads)", '8234')
    .option('--metrics-port <port>', "the orchestrator's Prometheus endpoint (cloud workers': 9464 inside each cloud)", '9464')
    .option('--host-link <cidr>', 'the link between this host and the clouds\' WAN (a /30)', DEFAULT_HOST_LINK)
    .option('--wan-gateway <ip>', "the WAN's router (the clouds get the next addresses)", '203.0.113.1')
    .option('--plain-stretch', 'stretch private networks across the WAN as plain VXLAN, not inside WireGuard tunnels (readable and injectable on the WAN: for measuring the encryption\'s cost)', false)
    .action(async (o: { id: string; clouds: string; wanMbit: string; fresh: boolean; temporalPort: string; uiPort: string; codecPort: string; metricsPort: string; hostLink: string; wanGateway: string; plainStretch: boolean }, cmd: Command) => {
      const g = globals(cmd);
      const status = await cloudsUp({
        id: o.id, clouds: o.clouds.split(',').map((c) => c.trim()), wanRateMbit: positive(o.wanMbit, '--wan-mbit'), fresh: o.fresh,
        temporalPort: positive(o.temporalPort, '--temporal-port'), uiPort: positive(o.uiPort, '--ui-port'), codecPort: positive(o.codecPort, '--codec-port'), metricsPort: positive(o.metricsPort, '--metrics-port'), hostLink: o.hostLink, wanGateway: o.wanGateway, stretch: o.plainStretch ? 'plain' : 'wireguard', log: say(g),
      });
      new Output(g.json).result(status, () => statusLines(status));
      if (!status.up) throw new Error(`the clouds of ${o.id} are not all up: see above`);
    });
  clouds.command('down').description('stop every worker, remove the clouds and their VIs, stop the Temporal server')
    .addOption(id())
    .option('--keep-temporal', 'leave the Temporal server running (its Web UI keeps the migrations)', false)
    .action(async (o: { id: string; keepTemporal: boolean }, cmd: Command) => {
      const g = globals(cmd);
      await cloudsDown({ id: o.id, keepTemporal: o.keepTemporal, log: say(g) });
      new Output(g.json).result({ id: o.id, down: true }, () => [`the clouds of ${o.id} are down`]);
    });
  clouds.command('status').description('what runs: the clouds, the Temporal server, each worker (pid, restarts, log); exit 1 when not all up')
    .addOption(id())
    .action(async (o: { id: string }, cmd: Command) => {
      const status = await cloudsStatus(o.id);
      new Output(globals(cmd).json).result(status, () => statusLines(status));
      if (!status.up) process.exitCode = EXIT.failed;
    });
}

function statusLines(s: CloudsStatus): string[] {
  const run = (running: boolean) => (running ? 'running' : 'NOT RUNNING');
  return [
    `clouds of ${s.id}: ${s.up ? 'up' : 'not up'}`,
    ...s.clouds.map((c) => `  ${c.name.padEnd(10)} public ${c.publicIp.padEnd(15)} floating IPs ${c.floatingRange}${c.dns ? `  DNS ${c.dns}` : ''}`),
    ...(s.metrics ? [`metrics: orchestrator ${s.metrics.orchestrator}; cloud workers: ${Object.values(s.metrics.clouds)[0] ?? ''} (and the other clouds')`] : []),
    ...(s.temporal ? [`Temporal ${s.temporal.address} (${s.temporal.pid ? `pid ${s.temporal.pid}, ` : ''}${run(s.temporal.running)}), Web UI ${s.temporal.ui}`] : []),
    ...(s.supervisor ? [`supervisor pid ${s.supervisor.pid} ${run(s.supervisor.running)}`] : ['no supervisor: migravi clouds up']),
    ...s.processes.map((p) => `  ${p.name.padEnd(22)} ${(p.pid ? `pid ${p.pid}` : '-').padEnd(10)} ${run(p.running).padEnd(11)} restarts ${p.restarts}${p.last ? ` (last: ${p.last})` : ''}  log ${p.log}`),
  ];
}

async function main(argv: string[]): Promise<number> {
  const cli = program();
  try {
    await cli.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT.ok;
  } catch (err) {
    // Commander has printed its own message (usage errors) or the help (--help, exit 0).
    if (err instanceof InvalidArgumentError) {
      process.stderr.write(`${err.message}\n`);
      return EXIT.usage;
    }
    if (err instanceof CommanderError) return err.exitCode === 0 ? EXIT.ok : EXIT.usage;
    const { code, message } = exitFor(err);
    const json = cli.opts<GlobalOptions>().json || argv.includes('--json');
    if (json) process.stdout.write(`${JSON.stringify({ error: { code, message } }, null, 2)}\n`);
    process.stderr.write(code === EXIT.usage ? `${message}\n` : `migravi: ${message}\n`);
    return code;
  }
}

void main(process.argv).then((code) => process.exit(code));
