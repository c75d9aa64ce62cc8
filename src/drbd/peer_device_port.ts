/**
 * The two interfaces between a DRBD volume's device and its connection to the peer (the kernel keeps them in
 * one struct drbd_device; here they are separate so that neither module reaches into the other's fields):
 *
 * - PeerDevicePort: what the connection, on behalf of the peer, may ask of the local disk, its metadata and
 *   its out-of-sync bitmap (drbd_receiver.c receive_Data / receive_DataRequest, drbd_worker.c resync,
 *   drbd_state.c after_state_ch). DrbdDevice implements it.
 * - PeerLink: what the device needs from the connection on its write path (drbd_req.c). DrbdConnection
 *   implements it.
 */
import type { BlockDevice } from "../bdev/bdev.js";
import type { OutOfSyncBitmap } from "./bitmap.js";
import type { DrbdDiskState, DrbdRole } from "./drbd_states.js";
import type { MetadataLayout, SuperBlock } from "./metadata.js";
import type { UuidSet } from "./uuids.js";

/**
 * A request that carries no data: "unmap" (UNMAP, WRITE SAME with UNMAP; REQ_OP_DISCARD, sent as P_TRIM) or
 * "zeroes" (WRITE ZEROES / WRITE SAME of zeroes; REQ_OP_WRITE_ZEROES, sent as P_ZEROES).
 */
export type Deallocation = "unmap" | "zeroes";

/** What the device needs from a connection to a peer (implemented by the connection module). */
export interface PeerLink {
  /** True while writes can be mirrored or marked for the peer (Connected, a resync state, Ahead). */
  readonly replicating: boolean;
  /**
   * Mirror a write (data) or a discard/zeroing (`bytes` long) at byte offset `offset`. Resolves true when
   * the peer confirmed it as the wire protocol requires, false when the peer will not have it (the
   * connection broke, the peer lacks the feature, or the link is Ahead and only told the peer the blocks
   * are out of sync): the device then marks the blocks out of sync.
   */
  mirror(
    offset: number,
    bytes: number,
    data: readonly Buffer[] | Deallocation,
    fua: boolean,
  ): Promise<boolean>;
  /** The peer is connected with an UpToDate disk: it can serve reads (drbd_req.c remote reads). */
  readonly peerReadable: boolean;
  /** Reads `into.length` bytes at byte `offset` from the peer's disk (P_DATA_REQUEST / P_DATA_REPLY). */
  readRemote(offset: number, into: Buffer): Promise<void>;
  /**
   * A Primary's own write while its re-attached disk is SyncTarget (DrbdConnection.attachWhileConnected):
   * the local write waits for resync writes to the same blocks (`before`); `done` when both copies have it.
   */
  localWrite?(start: number, end: number): { before: Promise<unknown>; done: () => void } | undefined;
}

/**
 * The out-of-sync bitmap as the connection reads it: the bitmap exchange (words, merge), resync requests
 * (nextSet, test), a full sync (setAll) or none (clearAll); blocks are marked through PeerDevicePort.
 */
export type PeerBitmap = Pick<
  OutOfSyncBitmap,
  "bits" | "words" | "outOfSyncBits" | "outOfSyncKiB" | "test" | "nextSet" | "setAll" | "clearAll" | "merge"
>;

/**
 * Why new I/O is suspended (drbd_suspended: susp, susp_fen): "user" by `drbdadm suspend-io`, "fencing" by a
 * resource-and-stonith Primary that lost its peer until fence-peer outdated it.
 */
export type IoSuspension = "user" | "fencing";

/** What the connection may ask of the local volume (implemented by DrbdDevice). */
export interface PeerDevicePort {
  readonly name: string;
  readonly role: DrbdRole;
  readonly disk: DrbdDiskState;
  /** The generation UUIDs (a copy). */
  readonly uuids: UuidSet;
  /** The superblock's flags (MDF_CRASHED_PRIMARY goes into P_UUIDS and the UUID comparison). */
  readonly superBlock: Readonly<Pick<SuperBlock, "flags">>;
  /** Bytes read from and written to the lower device (the SyncSource's c-min-rate check sees application I/O). */
  readonly io: Readonly<{ diskReadBytes: number; diskWrittenBytes: number }>;
  /** The size the peer is told in P_SIZES. */
  readonly layout: Readonly<Pick<MetadataLayout, "usableSectors">>;
  readonly bitmap: PeerBitmap;
  /** Whether a local unmap reads back zeroes (else an unmap the peer cannot take as P_TRIM is not mirrored). */
  readonly unmapReadsZeroes: boolean;
  /** The lower device, for the write-ordering flush between epochs received from the peer. */
  readonly lower: Pick<BlockDevice, "volatileWriteCache" | "flush">;
  /** Activity-log extents held by application writes in flight (net { congestion-extents }). */
  readonly activityLogExtentsInUse: number;

  /** The device size in sectors (drbd_get_capacity) and online growth (resize_link.ts). */
  readonly sizeSectors: number;
  maxSectors(): Promise<number>;
  grow(sectors: number, opts: { setNewBits: boolean }): Promise<boolean>;
  setDiskState(disk: DrbdDiskState): Promise<void>;
  setUuids(uuids: UuidSet): Promise<void>;
  /** Diskless: the current UUID of the data the device exposes through the peer (in memory only). */
  adoptExposedUuid(current: bigint): void;
  /** Gives up the Primary role (after-sb's call-pri-lost-after-sb without handler scripts). */
  secondary(): Promise<void>;
  persistBitmap(): Promise<void>;
  /** The blocks a byte range touches go out of sync (in memory); returns the bits newly set. */
  markOutOfSync(offset: number, bytes: number): number;
  /** The blocks a byte range touches are in sync (P_RS_WRITE_ACK). */
  markInSync(offset: number, bytes: number): void;
  /** Only the blocks a byte range covers whole are in sync (DP_MAY_SET_IN_SYNC). */
  markWholeBlocksInSync(offset: number, bytes: number): void;
  /** Blocks the peer may lack were marked: a Primary starts its own generation if it has none. */
  noteDivergence(): Promise<void>;

  /** receive_DataRequest / w_e_end_ov_req: local data for the peer. */
  readForPeer(offset: number, length: number): Promise<Buffer>;
  /** receive_RSDataReply: resync data written and marked in sync. */
  writeResyncData(offset: number, data: Buffer): Promise<void>;
  /** receive_Data: a mirrored write of the Primary peer. */
  applyPeerWrite(offset: number, iov: readonly Buffer[], bytes: number, fua: boolean): Promise<void>;
  /** receive_Data for P_TRIM / P_ZEROES. */
  applyPeerDeallocation(offset: number, bytes: number, kind: Deallocation): Promise<void>;

  /** Why new I/O waits, if it does. */
  readonly ioSuspended: IoSuspension | undefined;
  /** New reads and writes wait (none fails) until resumeIo for the same reason or for any (resume-io). */
  suspendIo(why: IoSuspension): void;
  /** Lifts the suspension of that reason (undefined: any, as `drbdadm resume-io`); waiting I/O goes on. */
  resumeIo(why?: IoSuspension): void;
  /** Records that the peer's disk is known Outdated (MDF_PEER_OUT_DATED). */
  setPeerOutdated(outdated: boolean): Promise<void>;

  /** Connects or disconnects the link the device mirrors its writes through. */
  setPeer(peer: PeerLink | undefined): void;
  /** Called after role or disk state changes (the connection announces them with P_STATE). */
  onStateChange(fn: () => void): () => void;
}
