/**
 * Everything provider-specific sits behind these two interfaces, so the activities never know
 * which cloud they talk to. The control plane is the cloud's API (networks, ports, security
 * rules, tunnels); the host runtime runs, checkpoints and restores containers on a Linux host.
 * The embedded "local" cloud implements the control plane with network namespaces; an OpenStack
 * control plane will implement the same interface with Neutron/Nova/Designate calls.
 */
import type { PageServerClient } from './runtime/criu-pages';
import type { CloudEndpoint, ContainerSpec, DnsRecord, NetworkSpec, PublicConnection, TransferEndpoint } from '../lib/types';

export interface ControlPlane {
  readonly endpoint: CloudEndpoint;

  /** The VI's containers this cloud hosts, as its control plane records them (for inventory). */
  listContainers(): Promise<Record<string, ContainerSpec>>;
  registerContainer(spec: ContainerSpec): Promise<void>;
  unregisterContainer(name: string): Promise<void>;

  getNetwork(name: string): Promise<NetworkSpec | undefined>;
  listNetworks(): Promise<NetworkSpec[]>;
  /** Creates the network if absent; an existing one must match the spec (same CIDR). */
  ensureNetwork(spec: NetworkSpec): Promise<{ created: boolean }>;
  removeNetwork(name: string): Promise<void>;

  /** Joins this cloud's copy of the network to the peer's over the WAN (idempotent); created = it was not joined before. */
  ensureStretch(network: NetworkSpec, peerPublicIp: string): Promise<{ created: boolean }>;
  removeStretch(network: NetworkSpec, peerPublicIp: string): Promise<void>;
  /** Public addresses of the peers a network is stretched to. */
  stretchPeers(network: string): Promise<string[]>;

  /**
   * A port with the container's fixed IP and MAC on its network, its ingress rules enforced
   * (OpenStack: a security group), realised on this cloud's host where the runtime runs the
   * container (how is the provider's business). A new port is unplugged until
   * setPortEnabled(true); an existing one keeps its state.
   */
  ensurePort(container: ContainerSpec): Promise<void>;
  removePort(containerName: string): Promise<void>;
  /** Plugs the port into its network or unplugs it (OpenStack: admin_state_up); the port stays. */
  setPortEnabled(containerName: string, enabled: boolean): Promise<void>;
  /** Addresses used by what is plugged into the network here (containers, other ports); not by the network's own gateway. */
  addressesInUse(network: string): Promise<Array<{ ip: string; mac: string; owner: string }>>;

  /** The public addresses this cloud gives out (CIDR). */
  floatingIpRange(): string;
  /**
   * Gives the container a floating IP NATed at the edge to `privateIp` (OpenStack: a floating IP
   * associated with the port): `address` when given (refused if outside the range or held by
   * another container), else the first free one. Idempotent: a container that has one keeps it.
   */
  associateFloatingIp(input: { container: string; privateIp: string; address?: string }): Promise<string>;
  /** Releases the container's floating IP (NAT and address); nothing to do when it has none. */
  releaseFloatingIp(container: string): Promise<void>;
  floatingIps(): Promise<Array<{ address: string; container: string; privateIp: string }>>;
  /** Outside TCP connections open through the container's floating IP here (the edge's connection tracking). */
  openPublicConnections(container: string): Promise<PublicConnection[]>;
  /**
   * Drain, at the destination: while connections opened through the peer's floating IP are open
   * (these, unknown to this edge), what the container sends out — but replies of this cloud's own
   * floating IP — leaves through the peer's edge, which holds their NAT (else a client would get
   * replies from another address and drop them). Replaces the container's earlier list; an
   * empty list ends it.
   */
  routeRepliesVia(container: string, connections: PublicConnection[], peerPublicIp: string): Promise<void>;

  /** Zones this cloud's DNS service serves (empty when it offers none). */
  dnsZones(): Promise<string[]>;
  /** The A records of a zone this cloud serves. */
  dnsRecords(zone: string): Promise<DnsRecord[]>;
  /** Replaces the A records of the given names in the zone, all or none (OpenStack: Designate recordsets). */
  setDnsRecords(zone: string, records: DnsRecord[]): Promise<void>;
  deleteDnsRecords(zone: string, names: string[]): Promise<void>;

  /**
   * While a connection's socket is frozen or being restored, the namespace that owns its IP must
   * not close it: no RST (PLATFORM.md: resets killed 1 in 18 moves), and no FIN either — a restore
   * attempt that fails after CRIU unlocked the network has its processes killed, and their
   * sockets would otherwise tell the peers the connection is over. Idempotent on and off.
   */
  setCloseGuard(containerName: string, enabled: boolean): Promise<void>;

  /**
   * Where `peer` pushes migration artifacts into `directory` (as this cloud's worker sees it: a
   * link to what `peerInbox` made for the peer); a directory outside the peer's inbox (an image
   * its page servers read) gives the peer only the forwarded ports.
   */
  transferEndpoint(directory: string, peer?: string): TransferEndpoint;

  /**
   * A fresh directory, `relative` inside what `peer` may write and nothing else (its own
   * unprivileged account's, in its chroot); undefined where peers have no inbox of their own.
   */
  peerInbox(peer: string, relative: string): Promise<string | undefined>;
}

export type ContainerStatus = 'running' | 'paused' | 'stopped' | 'absent';

/** Where a post-copy restore stands. */
export interface LazyMemoryState {
  /** CRIU's lazy-pages daemon: still fetching, done (no lazy page left), or lost. */
  daemon: 'running' | 'completed' | 'failed';
  /** The guard holds every restored process's userfaultfd (missing pages stall, never read as zeros). */
  guarded: boolean;
  running: boolean;
  /** Lazy pages not in the processes' memory yet, as the kernel shows it (0 while the daemon runs, unless counted on request). */
  missingPages: number;
}

export interface HostRuntime {
  status(name: string): Promise<ContainerStatus>;
  /** Creates and starts the container from its spec and rootfs (a directory or a tarball), on its port (ControlPlane.ensurePort first). */
  run(spec: ContainerSpec, rootfs: string): Promise<void>;
  /**
   * Right after a restore: makes the peers of the container's restored TCP connections
   * retransmit now instead of at the end of their back-off (up to twice the freeze later).
   * Returns how many connections were nudged.
   */
  nudgePeers(name: string, imageDir: string): Promise<number>;
  /** Thaws a container left frozen (paused), e.g. by a dump that was killed half-way. */
  resume(name: string): Promise<void>;
  /** Whether the dump into imageDir finished successfully (the image is complete and restorable). */
  checkpointComplete(imageDir: string): Promise<boolean>;
  /** Dumps the container (with established TCP connections when asked) and stops it. */
  checkpoint(name: string, imageDir: string, keepTcp: boolean): Promise<void>;
  /** Starts the container from a checkpoint image; its rootfs must already be in its bundle. */
  restore(spec: ContainerSpec, imageDir: string, keepTcp: boolean): Promise<void>;
  /**
   * Post-copy, source: freezes the container and writes every image file but its lazy memory
   * into `lazyDir`; the processes stay frozen and held, the first copy of that memory, until
   * their durable image is complete.
   */
  checkpointHeld(name: string, lazyDir: string, keepTcp: boolean): Promise<void>;
  /** Whether a held dump still holds its processes (frozen, with their memory), let them go after a complete dump, or failed. */
  heldDumpState(name: string, lazyDir: string): Promise<'holding' | 'released' | 'failed' | 'none'>;
  /** Memory of a held dump: what its image holds (eager) and what stays in the processes (lazy). */
  heldDumpBytes(lazyDir: string): Promise<{ lazyBytes: number; eagerBytes: number }>;
  /**
   * Post-copy, source: serves the held processes' lazy pages on the loopback's `port` and writes
   * their durable image into `imageDir` meanwhile; the processes are let go once it is complete.
   */
  servePagesFromHeld(name: string, lazyDir: string, imageDir: string, port: number, onChunk: () => Promise<void>, log: (line: string) => void): Promise<void>;
  /**
   * The durable image complete (written now if need be) and the held processes let go; false if
   * the memory is lost. Without `imageNeeded` (the group committed), they are let go at once.
   */
  settleHeldDump(name: string, lazyDir: string, imageDir: string, opts?: { imageNeeded?: boolean }): Promise<boolean>;
  /** Post-copy, source: serves the lazy pages of a complete image on the loopback's `port` (started again if it stopped): after its held processes were let go. */
  servePages(imageDir: string, port: number, opts?: { awaitListening?: boolean }): Promise<void>;
  stopServingPages(imageDir: string): Promise<void>;
  /**
   * Post-copy, destination: starts the container from an image whose lazy pages are fetched
   * afterwards from a page server reached on the loopback's `pageServerPort`, under a guard that
   * keeps a lost page source from turning missing pages into zeros.
   */
  restoreLazy(spec: ContainerSpec, imageDir: string, keepTcp: boolean, pageServerPort: number): Promise<void>;
  /** The guard takes hold of the restored processes' memory (before any page is fetched); returns how many processes it holds. */
  holdLazyMemory(imageDir: string): Promise<number>;
  /** Where a lazy restore stands; the missing pages are counted once the daemon has ended, or when asked. */
  lazyMemoryState(name: string, imageDir: string, opts?: { countMissing?: boolean }): Promise<LazyMemoryState>;
  /** Copies the pages still missing in from a page server, through the guard (after the daemon was lost). */
  fillLazyMemory(name: string, imageDir: string, source: PageServerClient, onProgress: () => void): Promise<{ copied: number; existed: number; gone: number }>;
  /** Every page is in (or the container is gone): the guard and the daemon stop. */
  endLazyRestore(imageDir: string): Promise<void>;
  /** Removes the container and its bundle; safe when it is already gone. */
  remove(name: string): Promise<void>;
  /**
   * A restored copy's lease: armed before its restore starts, by a timer outside the worker that
   * kills the copy (and a restore still running) at `untilMs` unless disarmed; arming while it
   * runs only moves the deadline later. Refuses once the timer fired.
   */
  armFence(name: string, untilMs: number): Promise<void>;
  /** Moves a running lease's end later; does nothing when none runs (not started yet, or committed). */
  renewFence(name: string, untilMs: number): Promise<void>;
  /** The group committed: the copy stays. Throws when its lease ran out first (it was killed). */
  disarmFence(name: string): Promise<void>;
  /** True once the lease ran out and the timer killed the copy. */
  fenceFired(name: string): boolean;
  /** Memory the container's processes hold that a checkpoint writes out (anonymous and shared pages). */
  memoryBytes(name: string): Promise<number>;
  /**
   * A process of the container that started after its start-up (a second or more after its first
   * process), if one runs now: evidence that it forks (post-copy's lazy pages stall on forks).
   */
  lateStartedProcess(name: string): Promise<{ pid: number; afterMs: number } | undefined>;
  /** Directory holding this container's bundle (config and rootfs). */
  bundleDir(name: string): string;
  /** Checks the kernel and CRIU can checkpoint here; returns problems found (empty when fine). */
  preflight(): Promise<string[]>;
}

/** One cloud as a worker sees it. */
export interface Cloud {
  name: string;
  controlPlane: ControlPlane;
  runtime: HostRuntime;
  /** Local directory where this cloud keeps migration artifacts. */
  workDir: string;
  /** Local directory for what this worker learns across migrations (its host's dump and restore rates). */
  stateDir: string;
  /**
   * A memory-backed directory (tmpfs), when the host offers one: a post-copy image is written
   * there at memory speed; it outlives every process (not the host, whose loss ends the
   * container anyway).
   */
  memoryDir?: string;
  /** Where this cloud keeps the volumes of containers moved into it (one directory per container). */
  volumesDir: string;
  /** The private key this cloud logs in to `peer` with (one per pair of clouds; never leaves the worker). */
  transferKeyFor(peer: string | undefined): string;
}
