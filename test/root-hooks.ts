/** Mocha root hooks (.mocharc.json requires this file): what a whole test run shares is released once, at its end. */
import { stopDevOpenStackIfThisRunStartedIt } from './e2e/dev-openstack';

export const mochaHooks = {
  async afterAll(this: Mocha.Context): Promise<void> {
    this.timeout(120_000);
    await stopDevOpenStackIfThisRunStartedIt();
  },
};
