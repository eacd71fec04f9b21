/**
 * The operator's command line.
 *   node dist/client/cli.js migrate PLAN.yaml [--temporal HOST:PORT] [--no-wait]
 *   node dist/client/cli.js progress WORKFLOW_ID
 *   node dist/client/cli.js approve WORKFLOW_ID
 *   node dist/client/cli.js abort WORKFLOW_ID [REASON]
 *   node dist/client/cli.js confirm-gone WORKFLOW_ID   (a migration frozen at its source: the destination copy is gone)
 *   node dist/client/cli.js validate-vi VI.yaml        (checks a VI description, prints it with its addresses allocated)
 *   node dist/client/cli.js list CLOUD                 (the VIs, networks and containers a cloud hosts, with their state)
 *   node dist/client/cli.js deploy CLOUD VI.yaml       (deploys a VI description; again with the same file: no change)
 *   node dist/client/cli.js remove CLOUD VI [--delete-volumes]
 *   node dist/client/cli.js report WORKFLOW_ID [--out DIR]  (a finished migration's report: printed, and written as JSON and an SVG chart)
 * The plan file is read and validated before anything connects to Temporal.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Client, Connection } from '@temporalio/client';
import { loadPlanFile } from '../lib/plan-file';
import YAML from 'yaml';
import { PlanError } from '../lib/plan';
import { loadViFile } from '../lib/vi-file';
import { allocateAddresses, ViSpecError } from '../lib/vi-spec';
import type { MigrationReport } from '../lib/types';
import { categoryChartSvg } from './category-chart';
import { formatReport } from './format-report';
import { abortMigration, approveCutover, confirmDestinationGone, deployVi, describeCloud, followMigration, queryProgress, removeVi, startMigration } from './migravi-client';

const usage =
  'usage: migravi migrate PLAN | progress ID | approve ID | abort ID [REASON] | confirm-gone ID | report ID [--out DIR] | validate-vi VI_FILE | list CLOUD | deploy CLOUD VI_FILE | remove CLOUD VI [--delete-volumes]   [--temporal HOST:PORT] [--no-wait]';
const commands = ['migrate', 'progress', 'approve', 'abort', 'confirm-gone', 'report', 'validate-vi', 'list', 'deploy', 'remove'];

async function main(): Promise<number> {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: {
      temporal: { type: 'string', default: process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233' },
      'no-wait': { type: 'boolean', default: false },
      'delete-volumes': { type: 'boolean', default: false },
      out: { type: 'string', default: '.' },
    },
  });
  const [command, target, ...rest] = positionals;
  if (!command || !target || !commands.includes(command) || (['deploy', 'remove'].includes(command) && !rest[0])) {
    console.error(usage);
    return 2;
  }
  if (command === 'validate-vi') {
    // Offline: the VI file is checked and printed with every address it will get.
    console.log(YAML.stringify(allocateAddresses(await loadViFile(target))));
    return 0;
  }
  // Validate first: a bad plan is refused before any connection is made.
  const plan = command === 'migrate' ? await loadPlanFile(target) : undefined;
  const vi = command === 'deploy' ? await loadViFile(rest[0]!) : undefined;
  const connection = await Connection.connect({ address: values.temporal, connectTimeout: '5s' });
  try {
    const client = new Client({ connection });
    if (plan) {
      const handle = await startMigration(client, plan);
      console.log(`started ${handle.workflowId}`);
      if (values['no-wait']) return 0;
      const report = await followMigration(
        handle,
        (p) => console.log(`  ${p.state}: ${p.phase}${p.container ? ` (${p.container})` : ''}`),
        250,
        (t) => console.log(`    ${t.kind}: ${(t.bytes / 1048576).toFixed(1)}${t.totalBytes ? ` of ${(t.totalBytes / 1048576).toFixed(1)}` : ''} MiB sent`),
      );
      console.log(formatReport(report));
      return 0;
    }
    if (vi) {
      console.log(`deploying VI ${vi.name} (${vi.containers.length} containers, ${vi.networks.length} networks) into ${target}…`);
      const outcome = await deployVi(client, target, vi);
      for (const c of outcome.containers) console.log(`  ${c.name.padEnd(12)} ${(outcome.started.includes(c.name) ? 'started' : 'unchanged').padEnd(10)} ${c.addresses.join(' ')}`);
      if (outcome.networksCreated.length) console.log(`  networks created: ${outcome.networksCreated.join(', ')}`);
      return 0;
    }
    if (command === 'remove') {
      const outcome = await removeVi(client, target, rest[0]!, { deleteVolumes: values['delete-volumes'] });
      console.log(`removed VI ${outcome.vi} from ${outcome.cloud}: containers ${outcome.containers.join(', ') || 'none'}; networks ${outcome.networks.join(', ') || 'none'}`);
      if (outcome.volumesKept.length) console.log(`  volumes kept (--delete-volumes removes them): ${outcome.volumesKept.join(', ')}`);
      if (outcome.volumesDeleted.length) console.log(`  volumes deleted: ${outcome.volumesDeleted.join(', ')}`);
      return 0;
    }
    if (command === 'list') {
      const listing = await describeCloud(client, target);
      console.log(`${listing.cloud}:`);
      for (const n of listing.networks) console.log(`  network ${n.name} ${n.cidr}${n.vi ? ` (VI ${n.vi})` : ''}${n.stretchedTo.length ? ` stretched to ${n.stretchedTo.join(', ')}` : ''}`);
      console.log(`  ${'VI'.padEnd(10)} ${'CONTAINER'.padEnd(12)} ${'STATE'.padEnd(8)} ADDRESSES`);
      for (const c of listing.containers) console.log(`  ${(c.vi ?? '-').padEnd(10)} ${c.name.padEnd(12)} ${c.status.padEnd(8)} ${c.addresses.join(' ')}${c.floatingIp ? ` public:${c.floatingIp}` : ''}`);
      return 0;
    }
    const handle = client.workflow.getHandle(target);
    if (command === 'report') {
      const report = (await handle.result()) as MigrationReport;
      console.log(formatReport(report));
      await mkdir(values.out, { recursive: true });
      const base = path.join(values.out, target);
      await writeFile(`${base}.json`, JSON.stringify(report, null, 2));
      await writeFile(`${base}.svg`, categoryChartSvg(report.categories, `Migration ${report.plan}: ${report.source} → ${report.destination}, ${(report.wallMs / 1000).toFixed(1)} s`));
      console.log(`written: ${base}.json, ${base}.svg`);
      return 0;
    }
    if (command === 'progress') console.log(JSON.stringify(await queryProgress(handle), null, 2));
    if (command === 'approve') await approveCutover(handle);
    if (command === 'abort') await abortMigration(handle, rest.join(' ') || 'aborted by the operator (CLI)');
    if (command === 'confirm-gone') await confirmDestinationGone(handle);
    return 0;
  } finally {
    await connection.close();
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    const invalidInput = err instanceof PlanError || err instanceof ViSpecError;
    console.error(invalidInput ? err.message : `migravi: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(invalidInput ? 2 : 1);
  },
);
