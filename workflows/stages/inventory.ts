/** Stage "inventory": what the source runs of the VI, and the groups it moves in (the plan's, checked against what was found). */
import { ApplicationFailure } from '@temporalio/workflow';
import { planGroups, PlanError } from '../../lib/plan';
import type { Inventory } from '../../lib/types';
import { phase, trackContainers, type MigrationContext } from './context';

export async function takeInventory(ctx: MigrationContext): Promise<{ inventory: Inventory; groups: string[][] }> {
  const { plan } = ctx;
  const inventory = await phase(ctx, 'inventory', undefined, () =>
    ctx.src.probe.inventory({ ...(plan.vi ? { vi: plan.vi } : {}), ...(plan.containers ? { containers: plan.containers } : {}) }),
  );
  ctx.claim.containers = inventory.containers.map((c) => c.name);
  trackContainers(ctx, ctx.claim.containers);
  ctx.sourcePublicIp = inventory.source.publicIp;
  try {
    return { inventory, groups: planGroups(plan, ctx.claim.containers) };
  } catch (err) {
    throw err instanceof PlanError ? ApplicationFailure.nonRetryable(`${err.message}\n(VI ${plan.vi} has ${ctx.claim.containers.join(', ')})`, 'InvalidPlan') : err;
  }
}
