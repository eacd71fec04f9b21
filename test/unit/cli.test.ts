import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
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

  it('accepts the demo plan and only then tries to reach Temporal', () => {
    const result = runCli('migrate', path.join(__dirname, '..', '..', '..', 'demo', 'plan.yaml'));
    assert.equal(result.status, 1);
    assert.match(result.stderr, /migravi: .*(connect|127\.0\.0\.1:9)/i);
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

  it('prints its usage for an unknown command', () => {
    const result = runCli('teleport', 'x');
    assert.equal(result.status, 2);
    assert.match(result.stderr, /usage: migravi migrate PLAN/);
  });
});
