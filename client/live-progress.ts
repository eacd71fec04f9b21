/**
 * A running migration as its operator watches it: per container, its stage, the copies running
 * now (bytes sent of their total, rate, time left) and what its finished copies wrote. The
 * workflow's progress query says where each container is; a running copy's bytes are in its
 * activity's last heartbeat, which the workflow does not see — Temporal's description of the
 * workflow does, so both are read and joined here.
 */
import type { WorkflowHandle } from '@temporalio/client';
import type { Payload } from '@temporalio/common';
import type { ArtifactKind, ContainerProgress, MigrationProgress, MigrationReport, TransferHeartbeat } from '../lib/types';

export interface LiveTransfer {
  kind: ArtifactKind;
  /** The activity sending it (sendRootfs, sendVolumes, checkpoint, …). */
  activity: string;
  /** Bytes the destination holds of it (resumed ones included). */
  sentBytes: number;
  /** Its size when the sender knows it (a tar stream's is estimated). */
  totalBytes?: number;
  rateBytesPerSecond?: number;
  /** At the current rate, when the size is known. */
  etaSeconds?: number;
}

export interface LiveContainer extends ContainerProgress {
  transfers: LiveTransfer[];
}

export interface LiveProgress extends Omit<MigrationProgress, 'containers'> {
  containers: LiveContainer[];
}

/** Bytes sent so far by the migration's running transfers, as their last heartbeats told the server. */
export async function runningTransfers(handle: WorkflowHandle): Promise<Array<TransferHeartbeat & { activity: string }>> {
  const description = await handle.describe();
  // The raw description holds the heartbeats as the workers sealed them: decoded with the client's own codec.
  const { payloadCodecs, payloadConverter } = handle.client.options.loadedDataConverter;
  const decode = async (payload: Payload): Promise<Payload> => {
    let payloads = [payload];
    for (const codec of [...payloadCodecs].reverse()) payloads = await codec.decode(payloads);
    return payloads[0]!;
  };
  const transfers = await Promise.all((description.raw.pendingActivities ?? []).map(async (activity) => {
    const payload = activity.heartbeatDetails?.payloads?.[0];
    const details = payload ? (payloadConverter.fromPayload(await decode(payload)) as Partial<TransferHeartbeat> | undefined) : undefined;
    if (typeof details?.bytes !== 'number' || !details.kind) return [];
    return [{ ...details, activity: activity.activityType?.name ?? 'unknown', kind: details.kind, bytes: details.bytes, wireBytes: details.wireBytes ?? details.bytes, done: details.done ?? [] }];
  }));
  return transfers.flat();
}

/** The migration now: its progress query joined with its running copies' heartbeats. */
export async function liveProgress(handle: WorkflowHandle): Promise<LiveProgress> {
  const [progress, transfers] = await Promise.all([handle.query<MigrationProgress>('progress'), runningTransfers(handle).catch(() => [])]);
  const containers = (progress.containers ?? []).map((c): LiveContainer => ({
    ...c,
    transfers: transfers.filter((t) => t.container === c.name).map(liveTransfer),
  }));
  return { ...progress, containers };
}

function liveTransfer(t: TransferHeartbeat & { activity: string }): LiveTransfer {
  const rate = t.rateBytesPerSecond;
  const left = t.totalBytes !== undefined ? Math.max(0, t.totalBytes - t.bytes) : undefined;
  return {
    kind: t.kind,
    activity: t.activity,
    sentBytes: t.bytes,
    ...(t.totalBytes !== undefined ? { totalBytes: t.totalBytes } : {}),
    ...(rate !== undefined ? { rateBytesPerSecond: rate } : {}),
    ...(left !== undefined && rate ? { etaSeconds: left / rate } : {}),
  };
}

/** Calls `onUpdate` with the live progress every `pollMs` until the migration ends, and once at its end; returns its report. */
export async function watchMigration(handle: WorkflowHandle, onUpdate: (p: LiveProgress) => void, pollMs = 500): Promise<MigrationReport> {
  let done = false;
  const poller = (async () => {
    while (!done) {
      try {
        onUpdate(await liveProgress(handle));
      } catch {
        /* the workflow may not have started its first task yet, or has just finished */
      }
      await new Promise((resolve) => setTimeout(resolve, pollMs));
    }
  })();
  try {
    return (await handle.result()) as MigrationReport;
  } finally {
    done = true;
    await poller;
    // The end as the workflow tells it (each container moved or rolled back): a closed workflow still answers queries.
    const last = await liveProgress(handle).catch(() => undefined);
    if (last) onUpdate(last);
  }
}

/**
 * Waits for the result, calling `onProgress` whenever the phase changes and `onTransfer` when a
 * running transfer reports more bytes (about once a second).
 */
export async function followMigration(
  handle: WorkflowHandle,
  onProgress: (p: MigrationProgress) => void,
  pollMs = 250,
  onTransfer?: (t: Pick<TransferHeartbeat, 'kind' | 'bytes'> & { totalBytes?: number }) => void,
): Promise<MigrationReport> {
  let lastKey = '';
  let lastBytes = -1;
  return watchMigration(
    handle,
    (live) => {
      const key = `${live.state}/${live.phase}/${live.container ?? ''}`;
      if (key !== lastKey) {
        lastKey = key;
        lastBytes = -1;
        onProgress(live as MigrationProgress);
      }
      for (const t of live.containers.flatMap((c) => c.transfers)) {
        if (!onTransfer || t.sentBytes === lastBytes) continue;
        lastBytes = t.sentBytes;
        onTransfer({ kind: t.kind, bytes: t.sentBytes, ...(t.totalBytes !== undefined ? { totalBytes: t.totalBytes } : {}) });
      }
    },
    pollMs,
  );
}
