/**
 * The workflow code bundle, cached on disk by the digest of what goes into it: bundling with
 * webpack takes seconds, and a restarted orchestrator should take over its workflows at once.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { bundleWorkflowCode } from '@temporalio/worker';

/**
 * Every compiled file the workflows can import, subdirectories included (the stages live in
 * workflows/stages: a digest of the top level only kept a stale bundle after a stage changed),
 * and the lockfile (for the npm packages).
 */
export function inputsDigest(distDir: string, lockFile: string): string {
  const hash = createHash('sha256');
  for (const dir of ['workflows', 'lib']) {
    const full = path.join(distDir, dir);
    for (const name of readdirSync(full, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.js')).sort()) {
      hash.update(name).update(readFileSync(path.join(full, name)));
    }
  }
  if (existsSync(lockFile)) hash.update(readFileSync(lockFile));
  return hash.digest('hex').slice(0, 16);
}

/** Path of a bundle of `workflowsPath` that matches the current code, built if missing. */
export async function cachedWorkflowBundle(workflowsPath: string): Promise<{ codePath: string }> {
  const distDir = path.resolve(__dirname, '..');
  const cacheDir = path.join(distDir, '.workflow-bundles');
  const codePath = path.join(cacheDir, `${inputsDigest(distDir, path.join(distDir, '..', 'package-lock.json'))}.js`);
  if (existsSync(codePath) && statSync(codePath).size > 0) return { codePath };
  // The failure converter runs inside the workflow sandbox: it is bundled with the workflows.
  const { code } = await bundleWorkflowCode({ workflowsPath, failureConverterPath: require.resolve('../lib/failure-converter') });
  mkdirSync(cacheDir, { recursive: true });
  const tmp = `${codePath}.${process.pid}.tmp`;
  writeFileSync(tmp, code);
  renameSync(tmp, codePath);
  return { codePath };
}
