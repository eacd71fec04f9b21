/**
 * Runs `task` for every item, at most `limit` at a time, and waits until every one has settled
 * (never leaves a step running behind a failure: the rollback must not race it); then returns
 * the results in order, or throws the first failure.
 */
export async function settleAll<T, R>(items: T[], task: (item: T, index: number) => Promise<R>, limit = items.length): Promise<R[]> {
  const results: Array<PromiseSettledResult<R>> = new Array(items.length);
  let next = 0;
  const runner = async () => {
    for (let i = next++; i < items.length; i = next++) {
      try {
        results[i] = { status: 'fulfilled', value: await task(items[i]!, i) };
      } catch (reason) {
        results[i] = { status: 'rejected', reason };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, runner));
  const failed = results.find((r) => r.status === 'rejected');
  if (failed) throw (failed as PromiseRejectedResult).reason;
  return results.map((r) => (r as PromiseFulfilledResult<R>).value);
}
