/**
 * The development OpenStack for the end-to-end tests: started once per test run by the first
 * test that needs it (seconds when it runs already), and taken down at the end of the run
 * (test/root-hooks.ts) only when this run started it — a control plane that ran before, a user's,
 * is left running.
 */
import { devCloudDown, devCloudStatus, devCloudUp } from '../../providers/openstack/dev-cloud/dev-cloud';
import type { DevCloudCredentials } from '../../providers/openstack/dev-cloud/cloud-resources';

let up: Promise<DevCloudCredentials> | undefined;
let startedByThisRun = false;

export function devOpenStack(): Promise<DevCloudCredentials> {
  up ??= (async () => {
    startedByThisRun = !devCloudStatus().processes.some((p) => p.running);
    return devCloudUp({ log: (line) => console.log(`      [openstack] ${line}`) });
  })();
  return up;
}

export async function stopDevOpenStackIfThisRunStartedIt(): Promise<void> {
  if (!up || !startedByThisRun) return;
  await up.catch(() => undefined);
  await devCloudDown({ log: (line) => console.log(`      [openstack] ${line}`) });
  up = undefined;
}
