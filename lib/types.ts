/** Values passed between the workflow and the activities. Plain data: they go through Temporal's history. */
import type { BlackoutPrediction } from './prediction';

/** A private (tenant) network of the VI. */
export interface NetworkSpec {
  name: string;
  /** e.g. 192.0.2.0/24 */
  cidr: string;
  /** VXLAN id used when the network is stretched between clouds. */
  vni: number;
  mtu: number;
  /** The VI the network was deployed for (a cloud refuses another VI's network of the same name). */
  vi?: string;
}

/** One attachment of a container to a private network: eth0, eth1, ... in attachment order. */
export interface InterfaceSpec {
  network: string;
  ip: string;
  mac: string;
}

/** A directory of the host bind-mounted into the container; it moves with the container. */
export interface VolumeSpec {
  /** Where the files are on the host of the cloud that runs the container (each cloud picks its own). */
  source: string;
  /** Mount point in the container. */
  target: string;
  readOnly: boolean;
}

/** A container as the source describes it: enough for the destination to rebuild its place. */
export interface ContainerSpec {
  name: string;
  /** The VI the container belongs to (inventory of a plan that names a VI finds it by this). */
  vi?: string;
  /** At least one; the first is eth0. */
  interfaces: InterfaceSpec[];
  /** Process arguments inside the container. */
  args: string[];
  /** KEY=VALUE; PATH is added when absent. */
  env?: string[];
  /** Working directory (default /). */
  cwd?: string;
  /** Numeric user and group the process runs as (default root). */
  user?: { uid: number; gid: number };
  volumes?: VolumeSpec[];
  /**
   * A public (floating) IP of the cloud, NATed at its edge to the container's address on
   * `network`. `address` is the one it has in the cloud whose registry holds this spec; another
   * cloud gives it one of its own.
   */
  floatingIp?: { network: string; address?: string };
  /** DNS names that point to its floating IP. */
  publicNames?: PublicName[];
  /** The rootfs is read-only: it can be copied while the container runs. */
  readonlyRootfs: boolean;
  /**
   * Allowed inbound traffic; everything else addressed to the container is dropped. Absent: no
   * filtering. Enforced by the cloud where the container runs, so it moves with it.
   */
  ingress?: IngressRule[];
}

/** An outside connection open through a floating IP (as the edge's connection tracking has it). */
export interface PublicConnection {
  client: string;
  clientPort: number;
  /** The container's side: its private address and port. */
  privateIp: string;
  port: number;
}

/** An A record of a VI's public name. */
export interface DnsRecord {
  /** Fully qualified, with the trailing dot. */
  name: string;
  ttl: number;
  addresses: string[];
}

/** A public name of a container: an A record to its floating IP, in a zone a cloud's DNS serves. */
export interface PublicName {
  /** Fully qualified, e.g. "www.vi.example." */
  name: string;
  zone: string;
  ttl: number;
  /** The cloud whose DNS service serves the zone (its worker manages the records). */
  dnsCloud: string;
}

export interface IngressRule {
  /** A port, or a range "low-high". */
  port: number | string;
  protocol: 'tcp' | 'udp';
  /** Allowed source addresses (CIDR). */
  from: string;
  /** Only traffic arriving on this network (a network-wide rule); any interface when absent. */
  network?: string;
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
  /** The cloud this endpoint leads into (picks the sender's key for that pair of clouds). */
  cloud?: string;
  host: string;
  port: number;
  username: string;
  /** SHA-256 of the server's host key (base64): the source checks it, no trust on first use. */
  hostKeySha256: string;
  /** Remote directory for this container's artifacts, as the sender's sftp session sees it (inside its chroot). */
  directory: string;
  /** The same directory as the receiving worker sees it (the image stream names it); absent: `directory`. */
  localDirectory?: string;
  /** The destination worker's image receiver, reached through the SSH connection (activities/image-stream.ts). */
  streamPort?: number;
  /** Loopback ports where this cloud's sshd lets peers reach its post-copy page servers. */
  pageServerPorts?: number[];
}

export type ArtifactKind = 'rootfs' | 'checkpoint' | 'volume';

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
  /** Size of the artifact. */
  bytes: number;
  /** Bytes written to the link for it, every attempt included (a failed attempt's bytes count too). */
  wireBytes: number;
  /** Bytes an earlier attempt had already delivered and that were not sent again. */
  resumedBytes: number;
  /** Of the tar stream, or of the manifest ("name bytes sha256" lines) when sent as files. */
  sha256: string;
  files?: FileDigest[];
  /** Digests the destination computed as the bytes arrived (a streamed image), to compare with `files`. */
  receivedFiles?: FileDigest[];
  durationMs: number;
}

/** One round of one volume as the source sent it (its manifest of file digests travels as a file). */
export interface VolumeReceipt {
  kind: 'volume';
  /** Which of the container's volumes. */
  index: number;
  /** "pre": everything, while the container runs; "final": what changed since, inside the freeze. */
  round: 'pre' | 'final';
  remotePath: string;
  /** Size of the tar stream. */
  bytes: number;
  /** Bytes written to the link (stream and manifest). */
  wireBytes: number;
  sha256: string;
  manifestSha256: string;
  /** Entries (files, directories, links) sent in this round, and entries deleted since the pre round. */
  changedEntries: number;
  deletedEntries: number;
  /** Bytes of file content sent in this round. */
  fileBytes: number;
  durationMs: number;
}

/** What moving a container's volumes took, before and inside the freeze. */
export interface VolumeReport {
  volumes: number;
  preBytes: number;
  preEntries: number;
  /** Sent inside the freeze: what changed since the pre-copy. */
  finalBytes: number;
  finalEntries: number;
  deletedEntries: number;
  finalMs: number;
}

export interface CheckpointResult {
  imageDir: string;
  imageBytes: number;
  durationMs: number;
  /** The image as it was streamed to the destination while CRIU wrote it (when the checkpoint was given an endpoint). */
  sent?: ArtifactReceipt;
  /** Post-copy: the directory that was sent (the image without its lazy memory). */
  sentDir?: string;
  /** Post-copy: the pages the destination fetches on demand, and where the source serves them. */
  postCopy?: PageSource;
}

/** Post-copy, source side: a complete image kept at the source, its lazy pages served from there. */
export interface PageSource {
  /** The source's sshd: the destination reaches the page server through it. */
  endpoint: TransferEndpoint;
  /** Page server port on the source's loopback (sshd forwards peers there only). */
  port: number;
  /** Bytes of memory left out of what was sent in the freeze: fetched after the restore. */
  lazyBytes: number;
  /** Bytes of memory sent in the freeze (pages CRIU restores eagerly: stacks, shared memory). */
  eagerBytes: number;
  /**
   * A member of a larger group: its memory waits from its restore until its window opens (once
   * the whole group is restored), so that the members restored first do not take the CPU and
   * the link from the restores of the others.
   */
  holdUntilWindow?: boolean;
}

/** Post-copy, destination side: how the memory followed the restored container. */
export interface PostCopyReport {
  /** From the end of the restore until every lazy page was in (checked in /proc/PID/pagemap). */
  windowMs: number;
  lazyBytes: number;
  /** Pages the worker itself copied in after the lazy-pages daemon or its page source was lost. */
  rescuedPages: number;
  /** Lazy pages not present at the end that the process itself had dropped (unmapped or discarded). */
  droppedPages: number;
  /** Page sources lost during the window (each one recovered: the image stayed at the source). */
  recoveries: string[];
}

/** What the destination found when it re-hashed an artifact at rest. */
export interface ArtifactCheck {
  kind: ArtifactKind;
  /** Files compared one by one (1 for a tar stream). */
  files: number;
  /** Bytes read back at the destination whose digest matched the sender's. */
  verifiedBytes: number;
  /** Digest recomputed at the destination (manifest of the recomputed file digests, or of the tar). */
  recomputedSha256: string;
  verifyMs: number;
  /** How the destination computed it: reading the files back at rest, or hashing the bytes as they arrived. */
  method?: 'at-rest' | 'in-flight';
}

export interface RestoreResult {
  /** CRIU restore alone (0 when an earlier attempt had restored and this one completed the rest). */
  durationMs: number;
  check: ArtifactCheck;
  /** An earlier attempt restored the container; this one found it running and finished the step. */
  completedEarlierAttempt: boolean;
  /** Its floating IP at the destination, when it has one. */
  floatingIp?: string;
}

/** How the source got its container back in a rollback. */
export type ResumeOutcome = 'was-running' | 'thawed' | 'restored-from-image';

export interface PhaseTiming {
  phase: string;
  container?: string;
  startedAt: number;
  durationMs: number;
}

export interface ContainerReport {
  name: string;
  /** From the start of its group's checkpoints to the end of its restore: the process is frozen. */
  frozenMs: number;
  checkpointMs: number;
  restoreMs: number;
  imageBytes: number;
  artifacts: ArtifactReceipt[];
  /** What the destination re-hashed at rest before using each artifact. */
  checks: ArtifactCheck[];
  /** Times an artifact arrived corrupt (digest mismatch at the destination) and was sent again. */
  resends: number;
  volumes?: VolumeReport;
  /** Post-copy: its memory arrived after the restore. */
  postCopy?: PostCopyReport;
  /** Its public address before (source's range) and after (destination's range) the move. */
  floatingIp?: { source?: string; destination?: string };
  /** Outside connections open through its old floating IP at the freeze, forwarded until they closed or the drain timed out. */
  drain?: { connections: number; closed: number; ms: number };
}

/** A group of containers frozen together and restored together. */
export interface GroupReport {
  containers: string[];
  /** From the first checkpoint's start to the last restore's end: the group's blackout. */
  frozenMs: number;
  /** What the workflow predicted before the freeze (lib/prediction.ts). */
  predicted?: BlackoutPrediction;
  /** Filler sent through the image stream to measure the link for the prediction (counted in bytesMoved). */
  linkProbeBytes?: number;
  /** How its memory moved, and why (the plan's mode, or what mode "auto" weighed). */
  mode?: 'streamed' | 'post-copy';
  modeReason?: string;
}

export interface MigrationReport {
  plan: string;
  source: string;
  destination: string;
  startedAt: number;
  wallMs: number;
  phases: PhaseTiming[];
  containers: ContainerReport[];
  groups: GroupReport[];
  /** Bytes written to the inter-cloud link for artifacts, every attempt included. */
  bytesMoved: number;
  /** Problems after the commit point that did not undo the move (e.g. a source left to clean). */
  warnings: string[];
  /** Faults met and survived on the way (retries, resends, restarts noticed), in order. */
  events: string[];
  /** How long switching the VI's public names to the destination took (the DNS service's API calls). */
  dnsSwitchMs?: number;
  /** The wall time in the seed paper's categories (container migration = the freeze, …, others = orchestration). */
  categories: CategoryTime[];
}

export interface MigrationProgress {
  state: 'running' | 'awaiting-approval' | 'completed' | 'compensating' | 'failed' | 'frozen-at-source';
  phase: string;
  container?: string;
  phases: PhaseTiming[];
  bytesMoved: number;
  /** Size of the artifact being transferred, when known (the checkpoint image). */
  transferTotalBytes?: number;
  error?: string;
  /** Each container of the migration: where its move is, and the bytes its finished copies wrote to the link. */
  containers?: ContainerProgress[];
}

export interface ContainerProgress {
  name: string;
  state: 'waiting' | 'moving' | 'moved' | 'rolled back';
  /** The stage its group is in (or was in last). */
  phase: string;
  /** Bytes its finished copies (and failed attempts) wrote to the link. */
  bytesMoved: number;
}

/** What a running transfer activity last reported through its heartbeat. */
export interface TransferHeartbeat {
  kind: ArtifactKind;
  /** Bytes of the artifact the destination has so far (resumed ones included). */
  bytes: number;
  /** Bytes written to the link, this attempt and the earlier ones. */
  wireBytes: number;
  /** Files sent whole so far (a retry keeps them). */
  done: FileDigest[];
  /** The artifact's size, when the sender knows it (a tar stream's is estimated from its files). */
  totalBytes?: number;
  /** Set by the attempt: the container whose step this is. */
  container?: string;
  /** Set by the attempt: bytes per second written to the link since this attempt's first report. */
  rateBytesPerSecond?: number;
}

/** What a cloud hosts, as its worker reads it: the VIs' networks and containers, and each one's state in the runtime. */
export interface CloudListing {
  cloud: string;
  networks: Array<{ name: string; vi?: string; cidr: string; stretchedTo: string[] }>;
  containers: Array<{ name: string; vi?: string; addresses: string[]; floatingIp?: string; status: string }>;
  /** The cloud's floating-IP range. */
  floatingRange?: string;
}

/** The seed paper's categories of a migration's time (its Figure 1; lib/report-categories.ts counts them). */
export type TimeCategory = 'container migration' | 'network replication' | 'inter-cloud communication and copies' | 'redirect' | 'others';

export interface CategoryTime {
  category: TimeCategory;
  ms: number;
  /** Of the migration's wall time, 0..1. */
  share: number;
  /** The phases counted in it (others: also the orchestration between phases). */
  phases: string[];
}
