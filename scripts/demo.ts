/**
 * The main job: a live migration of the demo VI between two embedded clouds, ending with its report.
 * Brings the clouds up as `migravi clouds up` does (the testbed, the Temporal dev server with its
 * Web UI, reused if it runs, and the supervised workers), deploys the demo VI in cloud-a with
 * clients keeping their connections open, migrates it to cloud-b through the workflow, and prints
 * what happened.
 * The clouds are torn down at the end; the Temporal server stays up so the run can be inspected.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Client, Connection } from '@temporalio/client';
import { loadDataConverter } from '../lib/temporal-access';
import { deployVi, followMigration, startMigration } from '../client/migravi-client';
import { cloudsDown, cloudsUp } from '../providers/local/clouds-service';
import { testbedsDir } from '../lib/paths';
import { stopPid } from '../lib/processes';
import { openLocalCloud } from '../providers/local/local-cloud';
import { readTestbed } from '../providers/local/testbed';
import { getFromOutside, plugClientPort, resolveFromOutside, startDemoClient, waitForDbRows, webTarget } from '../demo/scenario';
import { DEMO_VI, DEMO_VI_FILE, loadDemoVi } from '../demo/demo-vi';
import { formatReport } from '../client/format-report';
import { categoryChartSvg } from '../client/category-chart';

const TESTBED_ID = 'migravi';
/** The demo VI's public name (demo/demo.vi.yaml), served by cloud-a's PowerDNS. */
const PUBLIC_NAME = 'www.vi.example.';
/** How long outside connections through the old address are forwarded after the move. */
const DRAIN_SECONDS = 5;
const TEMPORAL_PORT = 7233;
const UI_PORT = 8233;

function say(line: string): void {
  console.log(`\x1b[1m[demo]\x1b[0m ${line}`);
}

/**
 * A demo interrupted mid-migration leaves its workflow open in the demo's Temporal database; its
 * clouds were just rebuilt, so resumed compensations would act on the new ones. Ended first
 * (terminate: nothing of what they refer to exists any more).
 */
async function terminateStaleMigrations(): Promise<void> {
  const connection = await Connection.connect({ address: `127.0.0.1:${TEMPORAL_PORT}` });
  try {
    const temporal = new Client({ connection, dataConverter: await loadDataConverter() });
    for await (const execution of temporal.workflow.list({ query: `WorkflowType = 'migrateInfrastructure' AND ExecutionStatus = 'Running'` })) {
      await temporal.workflow.getHandle(execution.workflowId, execution.runId).terminate('left open by an interrupted demo run; its clouds were rebuilt');
      say(`terminated ${execution.workflowId}, left open by an interrupted demo run (its clouds no longer exist)`);
    }
  } finally {
    await connection.close();
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      'wan-mbit': { type: 'string', default: '1000' },
      'ballast-mib': { type: 'string', default: '64' },
      'keep-clouds': { type: 'boolean', default: false },
    },
  });
  const stateDir = path.join(testbedsDir, TESTBED_ID);
  // The same service `migravi clouds up` runs, from empty clouds: testbed, Temporal, supervised workers.
  const service = await cloudsUp({ id: TESTBED_ID, fresh: true, wanRateMbit: Number(values['wan-mbit']), log: say });
  const record = await readTestbed(stateDir);
  if (!service.up || !record) throw new Error(`the clouds did not come up:\n${JSON.stringify(service, null, 2)}`);
  const logDir = service.logDir!;
  let failed = false;
  try {
    await terminateStaleMigrations();
    say(`workers up: orchestrator on "migravi", cloud-a and cloud-b workers inside their clouds, through the WAN and the host link to ${record.hostAddress}:${TEMPORAL_PORT}`);

    const connection = await Connection.connect({ address: `127.0.0.1:${TEMPORAL_PORT}` });
    const temporal = new Client({ connection, dataConverter: await loadDataConverter() });
    // The VI file, deployed through cloud-a's worker like any user's (the CLI's "deploy" does the same).
    // Volumes under the testbed's directory: each run starts from an empty database, and the teardown removes it.
    const vi = await loadDemoVi({ ballastMiB: Number(values['ballast-mib']), volumeRoot: path.join(stateDir, 'volumes') });
    say(`deploying VI "${vi.name}" from ${path.relative(process.cwd(), DEMO_VI_FILE)} into cloud-a`);
    const deployed = await deployVi(temporal, 'cloud-a', vi);
    for (const c of deployed.containers) say(`  ${c.name}: ${c.addresses.join(' ')}`);
    await plugClientPort(record, 'cloud-a');
    const client = await startDemoClient(record, 'cloud-a');
    const webClient = await startDemoClient(record, 'cloud-a', webTarget);
    const before = await client.waitForReplies(100);
    const webBefore = await webClient.waitForReplies(100);
    const dbBefore = await waitForDbRows(record, 'cloud-a', 20);
    say(`demo VI running in cloud-a: kv-server 192.0.2.10:7000 (${values['ballast-mib']} MiB of memory ballast), nginx 192.0.2.20:80 (worker as www-data),`);
    say(`  app 192.0.2.30 + 10.88.0.10 writing a row every 50 ms through one session to PostgreSQL 10.88.0.20:5432 (data on a volume)`);
    say(`clients on 192.0.2.100, one connection each: kv from port ${before.localPort} (counter at ${before.lastValue}), nginx from port ${webBefore.localPort} (request ${webBefore.lastValue} on it)`);
    say(`database: ${dbBefore.rows} rows; the application's session ${dbBefore.writer}`);
    const nameBefore = await resolveFromOutside(record, PUBLIC_NAME);
    const outsideBefore = nameBefore[0] ? await getFromOutside(record, nameBefore[0]) : '';
    say(`outside world (${record.outside.ip}): ${PUBLIC_NAME} resolves to ${nameBefore.join(', ') || 'nothing'} (cloud-a's floating IP); nginx answered ${outsideBefore ? 'there' : 'NOTHING'}`);
    // A user on the Internet who found nginx by its name keeps one connection open through the move.
    const outsideUser = await startDemoClient(record, 'outside', { name: 'outside-user', ip: nameBefore[0] ?? '0.0.0.0', port: 80, protocol: 'http' });
    const outsideUserBefore = await outsideUser.waitForReplies(100);

    // The plan names the VI; inventory finds its four containers, moved as one group (frozen
    // together, restored together); outside connections through the old address drain for 5 s.
    const handle = await startMigration(temporal, { name: 'demo', vi: DEMO_VI, source: 'cloud-a', destination: 'cloud-b', options: { drainTimeoutSeconds: DRAIN_SECONDS } });
    say(`migration started: workflow ${handle.workflowId}`);
    const mib = (n: number) => (n / 1048576).toFixed(1);
    const report = await followMigration(
      handle,
      (p) => say(`  ${p.state}: ${p.phase}${p.container ? ` (${p.container})` : ''}`),
      250,
      (t) => say(`    ${t.kind}: ${mib(t.bytes)}${t.totalBytes ? ` of ${mib(t.totalBytes)}` : ''} MiB sent`),
    );
    await connection.close();
    // Read at the end of the drain: the old address is released now, so its connection ends soon.
    const outsideUserAfter = await outsideUser.status();
    await stopPid(outsideUser.pid);

    const after = await client.waitForReplies(100);
    const webAfter = await webClient.waitForReplies(100);
    const dbAfter = await waitForDbRows(record, 'cloud-b', dbBefore.rows + 20);
    const dbKept = dbAfter.writer === dbBefore.writer && dbAfter.startedAt === dbBefore.startedAt && dbAfter.maxId === dbAfter.rows;
    const nameAfter = await resolveFromOutside(record, PUBLIC_NAME);
    const outsideAfter = nameAfter[0] ? await getFromOutside(record, nameAfter[0]) : '';
    const oldAddressSilent = nameBefore[0] ? (await getFromOutside(record, nameBefore[0])) === '' : false;
    const webReport = report.containers.find((c) => c.name === 'web');
    const outsideUserKept = outsideUserAfter.localPort === outsideUserBefore.localPort && outsideUserAfter.discontinuities === 0 && (webReport?.drain?.connections ?? 0) === 1;
    const publicOk = nameAfter.length === 1 && nameAfter[0] !== nameBefore[0] && outsideAfter !== '' && oldAddressSilent && outsideUserKept;
    const notes = [
      `outside user (${record.outside.ip} -> ${nameBefore[0] ?? '-'}, found by name): connection ${outsideUserKept ? 'SAME' : 'BROKEN'} through the cut-over and ${((webReport?.drain?.ms ?? 0) / 1000).toFixed(1)} s of drain (request ${outsideUserBefore.lastValue} -> ${outsideUserAfter.lastValue}, ${outsideUserAfter.discontinuities} discontinuities, longest gap ${outsideUserAfter.maxGapMs} ms); DNS switched in ${report.dnsSwitchMs ?? '-'} ms`,
      `outside world: ${PUBLIC_NAME} now resolves to ${nameAfter.join(', ') || 'nothing'} (cloud-b's floating IP), nginx ${outsideAfter ? 'answers there' : 'does NOT answer there'}; the old address ${nameBefore[0] ?? '-'} ${oldAddressSilent ? 'is released' : 'still answers'}`,
      `database (asked in cloud-b): ${dbAfter.rows} rows, ids 1..${dbAfter.maxId} without a gap (a restart from disk would skip some); server started ${dbAfter.startedAt} (${dbAfter.startedAt === dbBefore.startedAt ? 'same as before' : `was ${dbBefore.startedAt}`})`,
      `application -> database session: ${dbAfter.writer === dbBefore.writer ? 'SAME' : 'BROKEN'} (${dbBefore.writer} -> ${dbAfter.writer})`,
    ];
    await stopPid(client.pid);
    await stopPid(webClient.pid);
    const a = openLocalCloud(stateDir, 'cloud-a');
    const b = openLocalCloud(stateDir, 'cloud-b');
    const placement: Record<string, Record<string, string>> = {};
    for (const name of ['kv', 'web', 'app', 'db']) placement[name] = { 'cloud-a': await a.runtime.status(name), 'cloud-b': await b.runtime.status(name) };
    const clients = [
      { service: 'kv (counter)', before, after },
      { service: 'web (nginx, request number on the connection)', before: webBefore, after: webAfter },
    ];

    console.log('');
    console.log(formatReport(report, { clients, placement, notes }));
    const ui = `http://localhost:${UI_PORT}/namespaces/default/workflows/${encodeURIComponent(handle.workflowId)}`;
    console.log(`\nWeb UI: ${ui}`);
    const reportsDir = '/var/lib/migravi/reports';
    await mkdir(reportsDir, { recursive: true });
    await writeFile(path.join(reportsDir, `${handle.workflowId}.json`), JSON.stringify({ report, clients, placement }, null, 2));
    await writeFile(path.join(reportsDir, `${handle.workflowId}.svg`), categoryChartSvg(report.categories, `Migration ${report.plan}: ${report.source} → ${report.destination}, ${(report.wallMs / 1000).toFixed(1)} s`));
    console.log(`JSON report: ${path.join(reportsDir, `${handle.workflowId}.json`)}`);
    console.log(`chart of the time by category: ${path.join(reportsDir, `${handle.workflowId}.svg`)}`);
    const broken = clients.some((c) => c.after.localPort !== c.before.localPort || c.after.discontinuities > 0 || c.after.error);
    const misplaced = Object.values(placement).some((where) => where['cloud-b'] !== 'running' || where['cloud-a'] !== 'absent');
    if (broken || misplaced || !dbKept || !publicOk) {
      failed = true;
      console.error('\nthe demo did NOT keep its promises: see the report above');
    }
  } finally {
    if (values['keep-clouds']) {
      say(`clouds left up (--keep-clouds): see them with migravi clouds status, tear them down with migravi clouds down`);
    } else {
      await cloudsDown({ id: TESTBED_ID, keepTemporal: true });
      say('clouds torn down');
    }
    say(`logs of this run: ${logDir}`);
    say(`Temporal server and its codec endpoint left running for the Web UI; stop them with: kill $(cat /var/lib/migravi/temporal/server.pid) $(cat /var/lib/migravi/temporal/codec-server.pid)`);
  }
  if (failed) process.exit(1);
}

main().catch((err: unknown) => {
  console.error(`demo failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
