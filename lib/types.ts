/** Values passed between the workflow and the activities. Plain data: they go through Temporal's history. */

/** A private (tenant) network of the VI. */
export interface NetworkSpec {
  name: string;
  /** e.g. 192.0.2.0/24 */
  cidr: string;
  /** VXLAN id used when the network is stretched between clouds. */
  vni: number;
  mtu: number;
}

/** A container as the source describes it: enough for the destination to rebuild its place. */
export interface ContainerSpec {
  name: string;
  network: string;
  ip: string;
  mac: string;
  /** Process arguments inside the container. */
  args: string[];
  /** The rootfs is read-only: it can be copied while the container runs. */
  readonlyRootfs: boolean;
}

export interface CloudEndpoint {
  cloud: string;
  /** Address on the inter-cloud WAN: VXLAN tunnel end and transfer target. */
  publicIp: string;
}

export interface Inventory {
  source: CloudEndpoint;
  networks: NetworkSpec[];
  containers: ContainerSpec[];
}

/** Where the source may push files: the destination's sftp server. No secret in here. */
export interface TransferEndpoint {
  host: string;
  port: number;
  username: string;
  /** SHA-256 of the server's host key (base64): the source checks it, no trust on first use. */
  hostKeySha256: string;
  /** Remote directory for this container's artifacts. */
  directory: string;
}

export type ArtifactKind = 'rootfs' | 'checkpoint';

export interface FileDigest {
  name: string;
  bytes: number;
  sha256: string;
}

/**
 * What crossed the WAN for one artifact: a tar stream (rootfs: symlinks, modes) or the files of a
 * flat directory (a CRIU image: restored straight from where it lands, no unpacking in the blackout).
 */
export interface ArtifactReceipt {
  kind: ArtifactKind;
  /** The tar file, or the directory holding `files`. */
  remotePath: string;
  bytes: number;
  /** Of the tar stream, or of the manifest ("name bytes sha256" lines) when sent as files. */
  sha256: string;
  files?: FileDigest[];
  durationMs: number;
}

export interface CheckpointResult {
  imageDir: string;
  imageBytes: number;
  durationMs: number;
}

export interface RestoreResult {
  /** CRIU restore alone. */
  durationMs: number;
  /** Re-hashing the image that arrived, before the restore. */
  verifyMs: number;
  /** Bytes the destination read back and verified (must equal what was sent). */
  verifiedBytes: number;
}

export interface PhaseTiming {
  phase: string;
  container?: string;
  startedAt: number;
  durationMs: number;
}

export interface ContainerReport {
  name: string;
  /** From the start of the checkpoint to the end of the restore: the process is frozen. */
  frozenMs: number;
  checkpointMs: number;
  restoreMs: number;
  verifyMs: number;
  /** Image bytes the destination read back and found identical to what was sent. */
  verifiedBytes: number;
  imageBytes: number;
  artifacts: ArtifactReceipt[];
}

export interface MigrationReport {
  plan: string;
  source: string;
  destination: string;
  startedAt: number;
  wallMs: number;
  phases: PhaseTiming[];
  containers: ContainerReport[];
  bytesMoved: number;
  /** Problems after the commit point that did not undo the move (e.g. a source left to clean). */
  warnings: string[];
}

export interface MigrationProgress {
  state: 'running' | 'awaiting-approval' | 'completed' | 'compensating' | 'failed';
  phase: string;
  container?: string;
  phases: PhaseTiming[];
  bytesMoved: number;
  /** Size of the artifact being transferred, when known (the checkpoint image). */
  transferTotalBytes?: number;
  error?: string;
}

/** What a running transfer activity last reported through its heartbeat. */
export interface TransferHeartbeat {
  kind: ArtifactKind;
  bytes: number;
}
