/**
 * What a worker tells the outside: metrics on a Prometheus endpoint (the SDK's own — workflow and
 * activity task latencies, polls, failures — plus the project's, e.g. migravi_migrations_completed),
 * and its log as one JSON object per line, carrying what the SDK knows of the call (workflow id =
 * the migration's, activity, task queue) and what MigraVI adds (VI, phase, container).
 * Must run before the worker's first connection: the Rust core reads it once.
 */
import { DefaultLogger, Runtime, type LogLevel } from '@temporalio/worker';

export function installTelemetry(opts: { metrics?: string; level?: LogLevel }): void {
  const logger = new DefaultLogger(opts.level ?? 'INFO', (entry) => {
    const line = { time: new Date(Number(entry.timestampNanos / 1_000_000n)).toISOString(), level: entry.level, message: entry.message, ...entry.meta };
    // An Error's fields are not enumerable: JSON.stringify would write {} for the failure an activity logs.
    process.stdout.write(`${JSON.stringify(line, (_key, value: unknown) => (value instanceof Error ? { name: value.name, message: value.message, stack: value.stack } : value))}\n`);
  });
  Runtime.install({
    logger,
    ...(opts.metrics ? { telemetryOptions: { metrics: { prometheus: { bindAddress: opts.metrics } } } } : {}),
  });
}
