/**
 * Property-based fuzzing of the edges that take untrusted input: the migration plan and the VI
 * description (fast-check). Each malformed input is a valid document with one field made
 * hostile: a name that would be a path, an option, a shell word or a second line; a wrong type;
 * an unknown key. Every one must be refused with a problem naming that field, before any
 * Temporal call (the client given to the entry points fails the test if it is touched).
 */
import assert from 'node:assert/strict';
import type { Client } from '@temporalio/client';
import fc from 'fast-check';
import { deployVi, startMigration } from '../../client/migravi-client';
import { isIdentifier, isPlainFileName } from '../../lib/names';
import { parsePlan, PlanError } from '../../lib/plan';
import { parseViSpec, ViSpecError } from '../../lib/vi-spec';

/** Strings an attacker would try where a name reaches a path or a command. */
const HOSTILE = ['', '..', '../../etc', 'a/b', '/abs', '-rf', '--help', 'a b', 'a;reboot', '$(id)', '`id`', 'a\nb', 'a\0b', 'kv*', 'Kv', 'kv-', 'kv.', 'k\u0301v', 'x'.repeat(300), '\u202ekv', ' kv', 'kv\t'];

/** A string the name rule must refuse (at most `max` characters allowed). */
const badName = (max: number) => fc.oneof(fc.constantFrom(...HOSTILE), fc.string({ maxLength: 40, unit: 'binary' }).filter((s) => !isIdentifier(s, max)));
/** Values of the wrong type entirely. */
const notAString = fc.oneof(fc.integer(), fc.boolean(), fc.constant(null), fc.array(fc.string(), { maxLength: 2 }), fc.dictionary(fc.string(), fc.integer(), { maxKeys: 2 }));

const basePlan = () => ({ name: 'move-shop', source: 'cloud-a', destination: 'cloud-b', vi: 'shop', containers: ['web', 'db'], groups: [['db'], ['web']] });
const baseVi = () => ({
  name: 'shop',
  networks: [{ name: 'back', cidr: '10.10.2.0/24', ingress: [{ port: 80 }] }],
  containers: [{ name: 'db', rootfs: '/srv/images/postgres', command: ['/bin/postgres'], env: { PGDATA: '/data' }, user: '101:103', networks: [{ network: 'back', ip: '10.10.2.30', mac: '02:00:0a:0a:02:1e' }], volumes: [{ source: '/srv/volumes/shop-db', target: '/data' }] }],
});

type Doc = Record<string, unknown>;
function setAt(doc: Doc, path: Array<string | number>, value: unknown): Doc {
  const copy = structuredClone(doc);
  let at: Record<string | number, unknown> = copy;
  for (const key of path.slice(0, -1)) at = at[key] as Record<string | number, unknown>;
  at[path[path.length - 1]!] = value;
  return copy;
}

/** A client that fails the test if anything reaches it: parsing must refuse first. */
const untouchable = new Proxy({}, { get: (_t, prop) => assert.fail(`the client was touched (${String(prop)}) for an invalid input`) }) as Client;

/** Runs `property` over the mutations and returns how many distinct malformed documents were refused. */
function refuses(mutations: fc.Arbitrary<{ path: Array<string | number>; doc: Doc }>, problemsOf: (doc: Doc) => string[]): number {
  const distinct = new Set<string>();
  fc.assert(
    fc.property(mutations, ({ path, doc }) => {
      const problems = problemsOf(doc);
      const field = path.join('.');
      assert.ok(problems.some((p) => p.startsWith(`${field}: `) || p.startsWith(`${field}.`)), `refused, but no problem names ${field}: ${problems.join(' | ')}`);
      distinct.add(JSON.stringify(doc));
    }),
    { numRuns: 300, seed: 20261206 },
  );
  return distinct.size;
}

/** The problems `parse` refuses `doc` with, as an error of `kind` (the assertion fails if it is accepted). */
const problemsBy = (parse: (doc: Doc) => unknown, kind: typeof PlanError | typeof ViSpecError) => (doc: Doc): string[] => {
  try {
    parse(doc);
  } catch (err) {
    assert.ok(err instanceof kind, String(err));
    return err.problems;
  }
  return assert.fail(`accepted ${JSON.stringify(doc)}`);
};
const planProblems = problemsBy(parsePlan, PlanError);
const viProblems = problemsBy(parseViSpec, ViSpecError);

describe('input hardening (property-based fuzzing of the plan and the VI description)', () => {
  it('the valid documents the mutations start from are accepted', () => {
    assert.equal(parsePlan(basePlan()).vi, 'shop');
    assert.equal(parseViSpec(baseVi()).containers[0]!.name, 'db');
  });

  it('refuses every plan with a hostile name, naming the field', () => {
    const fields: Array<[Array<string | number>, number]> = [[['source'], 16], [['destination'], 16], [['vi'], 32], [['containers', 0], 12], [['containers', 1], 12], [['groups', 0, 0], 12]];
    const mutations = fc.constantFrom(...fields).chain(([path, max]) => badName(max).map((value) => ({ path, doc: setAt(basePlan(), path, value) })));
    const n = refuses(mutations, planProblems);
    assert.ok(n >= 20, `only ${n} distinct malformed plans`);
  });

  it('refuses every plan with a field of the wrong type or an unknown key, naming it', () => {
    const fields: Array<Array<string | number>> = [['name'], ['source'], ['destination'], ['vi'], ['containers'], ['groups'], ['options']];
    const wrongType = fc.constantFrom(...fields).chain((path) => notAString.filter((v) => !(path[0] === 'options' && typeof v === 'object' && v !== null && !Array.isArray(v))).map((value) => ({ path, doc: setAt(basePlan(), path, value) })));
    const unknownKey = fc.string({ minLength: 1, maxLength: 12 }).filter((k) => !(k in basePlan()) && k !== 'options' && k !== '__proto__').map((key) => ({ path: [] as Array<string | number>, doc: { ...basePlan(), [key]: 1 } }));
    const n = refuses(wrongType, planProblems);
    assert.ok(n >= 20, `only ${n} distinct malformed plans`);
    fc.assert(fc.property(unknownKey, ({ doc }) => assert.ok(planProblems(doc).some((p) => /unrecognized key/i.test(p)))), { numRuns: 100, seed: 1 });
  });

  it('refuses every VI description with a hostile name, path or address, naming the field', () => {
    const fields: Array<[Array<string | number>, fc.Arbitrary<unknown>]> = [
      [['name'], badName(32)],
      [['networks', 0, 'name'], badName(11)],
      [['containers', 0, 'name'], badName(12)],
      [['containers', 0, 'networks', 0, 'network'], badName(11)],
      [['containers', 0, 'rootfs'], fc.constantFrom('srv/images', '../images', '/srv/../etc', '/srv/./x', '', '/a/..')],
      [['containers', 0, 'volumes', 0, 'source'], fc.constantFrom('relative', '/srv/volumes/..', '/../../root', '')],
      [['containers', 0, 'networks', 0, 'ip'], fc.constantFrom('10.10.2.256', '10.10.2', '10.10.2.30; id', 'localhost', '::1', '010.10.2.30')],
      [['containers', 0, 'networks', 0, 'mac'], fc.constantFrom('02:00:0a', 'zz:00:0a:0a:02:1e', '02-00-0a-0a-02-1e')],
      [['networks', 0, 'cidr'], fc.constantFrom('10.10.2.0/33', '10.10.2.0', 'any')],
      [['containers', 0, 'user'], fc.constantFrom('root', '0:root', '-1', '1:2:3')],
    ];
    const mutations = fc.constantFrom(...fields).chain(([path, values]) => values.map((value) => ({ path, doc: setAt(baseVi(), path, value) })));
    const n = refuses(mutations, viProblems);
    assert.ok(n >= 20, `only ${n} distinct malformed VI descriptions`);
    // An environment variable's name goes into the runtime's config: the rule names it too.
    assert.ok(viProblems(setAt(baseVi(), ['containers', 0, 'env'], { 'A=B; id': 'x' })).some((p) => p.startsWith('containers.0.env')));
  });

  it('refuses them at the entry points before any Temporal call', async () => {
    const plans = fc.sample(fc.constantFrom<Array<string | number>>(['source'], ['vi'], ['containers', 0]).chain((path) => badName(12).map((v) => setAt(basePlan(), path, v))), { numRuns: 25, seed: 7 });
    for (const plan of plans) await assert.rejects(startMigration(untouchable, plan), PlanError);
    const vis = fc.sample(badName(12).map((v) => setAt(baseVi(), ['containers', 0, 'name'], v)), { numRuns: 25, seed: 8 });
    for (const vi of vis) await assert.rejects(deployVi(untouchable, 'cloud-a', vi as never), ViSpecError);
  });

  it('lets a peer name only plain files inside the directory it writes', () => {
    fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 30 }), (name) => {
      if (isPlainFileName(name)) assert.ok(!name.includes('/') && name !== '..' && name !== '.' && !/[\0-\x1f]/.test(name));
    }), { numRuns: 500, seed: 3 });
    for (const name of ['../x', '..', '.', 'a/b', '', 'a\nb']) assert.equal(isPlainFileName(name), false, name);
    for (const name of ['pages-1.img', 'core-12.img', 'inventory.img']) assert.equal(isPlainFileName(name), true, name);
  });
});
