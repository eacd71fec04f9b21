import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { inputsDigest } from '../../workers/workflow-bundle';

describe('the cached workflow bundle', () => {
  it("is rebuilt when any compiled workflow file changes, a stage's in a subdirectory too", () => {
    const dist = mkdtempSync(path.join(os.tmpdir(), 'migravi-bundle-'));
    try {
      for (const dir of ['workflows/stages', 'lib']) mkdirSync(path.join(dist, dir), { recursive: true });
      writeFileSync(path.join(dist, 'workflows', 'index.js'), 'a');
      writeFileSync(path.join(dist, 'workflows', 'stages', 'predict.js'), 'b');
      writeFileSync(path.join(dist, 'lib', 'plan.js'), 'c');
      const lock = path.join(dist, 'package-lock.json');
      const before = inputsDigest(dist, lock);
      assert.equal(inputsDigest(dist, lock), before);
      writeFileSync(path.join(dist, 'workflows', 'stages', 'predict.js'), 'b2');
      assert.notEqual(inputsDigest(dist, lock), before, 'a changed stage kept the old bundle');
    } finally {
      rmSync(dist, { recursive: true, force: true });
    }
  });
});
