import assert from 'node:assert/strict';
import { parsePlan, planGroups, PlanError, transferMode } from '../../lib/plan';
import { parsePlanText } from '../../lib/plan-file';

describe('migration plan', () => {
  it('accepts a minimal plan and fills in the defaults', () => {
    const plan = parsePlan({ name: 'demo', source: 'cloud-a', destination: 'cloud-b', containers: ['kv'] });
    assert.deepEqual(plan.options, { keepTcpConnections: true, transferTimeoutSeconds: 1800, blackoutBudgetSeconds: 120, rollbackTimeoutSeconds: 600, approveCutover: false, parallelTransfers: 4, drainTimeoutSeconds: 60, postCopy: false });
  });

  it('reads YAML and JSON alike', () => {
    const yaml = parsePlanText('name: demo\nsource: cloud-a\ndestination: cloud-b\ncontainers: [kv, db]\n', 'plan.yaml');
    const json = parsePlanText(JSON.stringify({ name: 'demo', source: 'cloud-a', destination: 'cloud-b', containers: ['kv', 'db'] }), 'plan.json');
    assert.deepEqual(yaml, json);
    assert.deepEqual(yaml.containers, ['kv', 'db']);
  });

  it('lists every problem with its path', () => {
    assert.throws(
      () => parsePlan({ name: 'bad name!', source: 'cloud-a', destination: 'cloud-a', containers: ['kv', 'kv', 'Bad'], extra: 1 }),
      (err: unknown) => {
        assert.ok(err instanceof PlanError);
        const text = err.problems.join('\n');
        assert.match(text, /^name: a plan name/m);
        assert.match(text, /containers\.2: a container name/);
        assert.match(text, /Unrecognized key.*extra/);
        assert.match(text, /destination: destination must differ from source \(both are "cloud-a"\)/);
        assert.match(text, /containers\.1: container "kv" is listed twice/);
        return true;
      },
    );
  });

  it('refuses a plan without containers and out-of-range options', () => {
    assert.throws(() => parsePlan({ name: 'p', source: 'a', destination: 'b', containers: [] }), /containers: the plan names no container/);
    assert.throws(
      () => parsePlan({ name: 'p', source: 'a', destination: 'b', containers: ['x'], options: { transferTimeoutSeconds: 1 } }),
      /options\.transferTimeoutSeconds/,
    );
  });

  it("takes a mode for the memory's move, postCopy as its older spelling; refuses the two when they disagree", () => {
    const plan = (options: Record<string, unknown>) => parsePlan({ name: 'p', source: 'a', destination: 'b', containers: ['x'], options });
    assert.equal(transferMode(plan({}).options), 'streamed');
    assert.equal(transferMode(plan({ mode: 'auto' }).options), 'auto');
    assert.equal(transferMode(plan({ postCopy: true }).options), 'post-copy');
    assert.equal(transferMode(plan({ postCopy: true, mode: 'post-copy' }).options), 'post-copy');
    assert.throws(() => plan({ postCopy: true, mode: 'auto' }), /options\.mode: postCopy: true asks for post-copy, mode "auto" for another/);
    assert.throws(() => plan({ mode: 'lazy' }), /options\.mode/);
  });

  it('moves a VI by its name, or a part of it, in groups that cover exactly what moves', () => {
    assert.equal(parsePlan({ name: 'p', vi: 'shop', source: 'a', destination: 'b' }).containers, undefined);
    assert.throws(() => parsePlan({ name: 'p', source: 'a', destination: 'b' }), /containers: the plan names neither a VI \(vi\) nor containers/);
    assert.throws(
      () => parsePlan({ name: 'p', source: 'a', destination: 'b', containers: ['kv', 'db'], groups: [['kv', 'web'], ['kv']] }),
      (err: unknown) => {
        const text = (err as PlanError).problems.join('\n');
        assert.match(text, /groups\.0\.1: container "web" is not among the containers moved \(kv, db\)/);
        assert.match(text, /groups\.1\.0: container "kv" is in two groups/);
        assert.match(text, /groups: no group moves db/);
        return true;
      },
    );
    const vi = parsePlan({ name: 'p', vi: 'shop', source: 'a', destination: 'b', groups: [['db'], ['web']] });
    assert.deepEqual(planGroups(vi, ['db', 'web']), [['db'], ['web']]);
    assert.throws(() => planGroups(vi, ['db', 'web', 'app']), /groups: no group moves app/);
    assert.deepEqual(planGroups(parsePlan({ name: 'p', vi: 'shop', source: 'a', destination: 'b' }), ['db', 'web']), [['db', 'web']]);
  });

  it('names the file and the syntax error of an unreadable plan', () => {
    assert.throws(() => parsePlanText('name: [unclosed', 'broken.yaml'), /broken\.yaml: not valid YAML/);
  });
});
