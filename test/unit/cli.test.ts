import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const cli = path.join(__dirname, '..', '..', 'client', 'cli.js');

describe('command line', function () {
  this.timeout(30_000);
  let dir: string;
  before(() => (dir = mkdtempSync(path.join(os.tmpdir(), 'migravi-cli-'))));
  after(() => rmSync(dir, { recursive: true, force: true }));

  // The address points at a port nothing listens on: a bad plan must be refused before any connection.
  const runCli = (...args: string[]) => spawnSync(process.execPath, [cli, ...args, '--temporal', '127.0.0.1:9'], { encoding: 'utf8', timeout: 20_000 });

  it('refuses an invalid plan file, naming each problem, without contacting Temporal', () => {
    const file = path.join(dir, 'bad.yaml');
    writeFileSync(file, 'name: demo\nsource: cloud-a\ndestination: cloud-a\ncontainers: []\n');
    const result = runCli('migrate', file);
    assert.equal(result.status, 2, result.stderr);
    assert.match(result.stderr, /invalid migration plan/);
    assert.match(result.stderr, /destination: destination must differ from source/);
    assert.match(result.stderr, /containers: the plan names no container/);
    assert.doesNotMatch(result.stderr, /connect|ECONNREFUSED/i);
  });

  it('names a missing plan file', () => {
    const result = runCli('migrate', path.join(dir, 'nope.yaml'));
    assert.equal(result.status, 2);
    assert.match(result.stderr, /cannot read plan file .*nope\.yaml: ENOENT/);
  });

  it('accepts the demo plan and only then tries to reach Temporal, which it says it cannot reach (exit 4)', () => {
    const result = runCli('migrate', path.join(__dirname, '..', '..', '..', 'demo', 'plan.yaml'));
    assert.equal(result.status, 4, result.stderr);
    assert.match(result.stderr, /migravi: cannot reach Temporal at 127\.0\.0\.1:9 .*is it running\?/);
  });

  it('says the same as one JSON document on stdout with --json, for scripts', () => {
    const result = runCli('progress', 'migrate-demo-x', '--json');
    assert.equal(result.status, 4, result.stderr);
    const { error } = JSON.parse(result.stdout) as { error: { code: number; message: string } };
    assert.equal(error.code, 4);
    assert.match(error.message, /cannot reach Temporal at 127\.0\.0\.1:9/);
  });

  it('checks a VI file offline and prints it with the addresses it will get', () => {
    const file = path.join(dir, 'shop.yaml');
    writeFileSync(file, 'name: shop\nnetworks: [{name: back, cidr: 10.1.2.0/24}]\ncontainers:\n  - {name: db, rootfs: /srv/pg, command: [/bin/pg], networks: [{network: back}]}\n');
    const ok = runCli('validate-vi', file);
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /ip: 10\.1\.2\.10\n\s+mac: 02:[0-9a-f]{2}:0a:01:02:0a/);
    writeFileSync(file, 'name: shop\nnetworks: [{name: back, cidr: 10.1.2.0/24}]\ncontainers:\n  - {name: db, rootfs: /srv/pg, command: [/bin/pg], networks: [{network: front}]}\n');
    const bad = runCli('validate-vi', file);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /invalid VI description:\n\s+- containers\.0\.networks\.0\.network: no network "front" in this VI \(it has: back\)/);
  });

  it('refuses an unknown command or a missing argument with exit 2, saying what is wrong', () => {
    const unknown = runCli('teleport', 'x');
    assert.equal(unknown.status, 2);
    assert.match(unknown.stderr, /unknown command 'teleport'/);
    const missing = runCli('deploy', 'cloud-a');
    assert.equal(missing.status, 2);
    assert.match(missing.stderr, /missing required argument 'vi-file'/);
  });

  it('refuses a bad evacuation or schedule before reaching Temporal, naming each problem (exit 2)', () => {
    const same = runCli('evacuate', 'cloud-a', '--to', 'cloud-a');
    assert.equal(same.status, 2, same.stderr);
    assert.match(same.stderr, /destination: destination must differ from source/);
    const schedule = runCli('schedule', 'create', 'nightly', '--source', 'cloud-a', '--to', 'cloud-b', '--cron', '0 3 * * *', '--every', 'soon', '--vi', 'Bad_Name');
    assert.equal(schedule.status, 2, schedule.stderr);
    assert.match(schedule.stderr, /exactly one of cron/);
    assert.match(schedule.stderr, /every "soon": a number and a unit/);
    assert.match(schedule.stderr, /vis\.0: a VI name is/);
    assert.doesNotMatch(`${same.stderr}${schedule.stderr}`, /cannot reach/);
  });

  // Every command a help lists, read from that help (a new command is covered too); `clouds up` as "clouds up".
  const commandsOf = (...parent: string[]): string[] => {
    const help = spawnSync(process.execPath, [cli, ...parent, '--help'], { encoding: 'utf8' }).stdout;
    const at = help.indexOf('Commands:');
    if (at < 0) return [];
    return [...help.slice(at).matchAll(/^ {2}([a-z-]+) /gm)].map((m) => m[1]!).filter((c) => c !== 'help');
  };
  const commands = () => commandsOf().flatMap((c) => [c, ...commandsOf(c).map((sub) => `${c} ${sub}`)]);

  it('is on the PATH as migravi (installed by the set-up), this checkout\'s own', () => {
    const result = spawnSync('migravi', ['--help'], { encoding: 'utf8' });
    assert.equal(result.status, 0, `migravi on the PATH: ${result.error?.message ?? result.stderr}`);
    assert.match(result.stdout, /^Usage: migravi /);
    assert.equal(realpathSync('/usr/local/bin/migravi'), realpathSync(cli), 'the migravi on the PATH is another checkout\'s');
  });

  it('has --help, listing every command and the exit codes', () => {
    const result = spawnSync(process.execPath, [cli, '--help'], { encoding: 'utf8' });
    assert.equal(result.status, 0, result.stderr);
    assert.deepEqual(commandsOf(), ['migrate', 'progress', 'approve', 'abort', 'confirm-gone', 'report', 'validate-vi', 'list', 'deploy', 'remove', 'clouds', 'evacuate', 'schedule', 'openstack', 'tls', 'keys', 'codec-server']);
    assert.deepEqual(commandsOf('tls'), ['init']);
    assert.deepEqual(commandsOf('keys'), ['init', 'rotate', 'list']);
    assert.deepEqual(commandsOf('clouds'), ['up', 'down', 'status']);
    assert.deepEqual(commandsOf('openstack'), ['up', 'down', 'status']);
    assert.deepEqual(commandsOf('schedule'), ['create', 'list', 'describe', 'pause', 'unpause', 'trigger', 'delete']);
    for (const code of [0, 1, 2, 3, 4, 5, 6]) assert.match(result.stdout, new RegExp(`^ {2}${code} {2}\\S`, 'm'), `exit code ${code} is not explained`);
  });

  it('has --help on every command: its arguments, its options and the global ones, exit 0, nothing contacted', async function () {
    // ~40 commands at ~0.7 s of Node start-up each: four at a time, and time for a loaded machine.
    this.timeout(120_000);
    const list = commands();
    const results: Array<{ status: number | null; stdout: string; stderr: string }> = new Array(list.length);
    let next = 0;
    await Promise.all([0, 1, 2, 3].map(async () => {
      for (let i = next++; i < list.length; i = next++) {
        results[i] = await new Promise((resolve) => {
          execFile(process.execPath, [cli, ...list[i]!.split(' '), '--help', '--temporal', '127.0.0.1:9'], { encoding: 'utf8', timeout: 20_000 }, (err, stdout, stderr) =>
            resolve({ status: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }));
        });
      }
    }));
    for (const [i, command] of list.entries()) {
      const result = results[i]!;
      assert.equal(result.status, 0, `${command}: ${result.stderr}`);
      assert.match(result.stdout, new RegExp(`^Usage: migravi ${command} `), command);
      assert.match(result.stdout, /Global Options:[\s\S]*--temporal <host:port>[\s\S]*--json/, command);
      assert.doesNotMatch(result.stderr, /cannot reach/, command);
    }
  });
});
