/**
 * Resync of one DRBD 8.4 volume (drbd_receiver.c receive_bitmap, receive_sync_uuid, receive_DataRequest,
 * receive_RSDataReply; drbd_worker.c drbd_start_resync, make_resync_request, drbd_resync_finished;
 * drbd_state.c abw_start_sync): the bitmap exchange, the sync UUID, the target's paced requests, the
 * source's replies, the end of a resync, and the full resyncs invalidate / invalidate-remote start.
 *
 * Checksum-based resync (net { csums-alg }; drbd_worker.c read_for_csum, w_e_send_csum,
 * w_e_end_csum_rs_req; drbd_receiver.c got_IsInSync): the SyncTarget reads its own copy of each range it
 * asks for and sends P_CSUM_RS_REQUEST with the digest; the SyncSource digests its copy and answers
 * P_RS_IS_IN_SYNC when they match (no data on the wire) or P_RS_DATA_REPLY when they differ.
 */
import {
  ConnState,
  commandName,
  decodeBlockAck,
  decodeData,
  decodePlainBitmapChunk,
  decodeRleBitmapChunk,
  decodeState,
  decodeUuids,
  BitmapTransfer,
  DiskState,
  Role,
  DrbdCommand,
  DrbdProtocolError,
  encodeBitmapPackets,
  encodeBlockAck,
  encodeBlockRequest,
  encodeData,
  encodeSyncUuid,
  ID_SYNCER,
  packState,
  SS_SUCCESS,
  stateMask,
} from "./protocol.js";
import { MDF_CRASHED_PRIMARY, newUuid, SECTOR } from "./metadata.js";
import { resyncFinished, type UuidSet } from "./uuids.js";
import { RESYNC_DEFAULTS, RESYNC_TURN_MS, ResyncController } from "./resync_controller.js";
import { isVerifyAlg, STATE_ERROR_TEXT, verifyDigest, type VerifyAlg } from "./verify.js";
import { DrbdStateError } from "./drbd_states.js";
import type { SyncSide } from "./conn_state.js";
import type { Link } from "./link.js";
import type { PacketStream } from "./packet_stream.js";
import type { PeerStateChangeRequest } from "./state_change_request.js";

/** Resync data requested and not yet received, at most (max-buffers 2048 pages / 2, in sectors). */
const MAX_RS_IN_FLIGHT_SECTORS = 8192;
/** 4 KiB blocks per resync request, at most (128 KiB). */
const MAX_RS_REQUEST_BLOCKS = 32;
/** Bitmap bits per resync extent (BM_BLOCKS_PER_BM_EXT: 4 MiB), which a request does not cross. */
const BM_BLOCKS_PER_EXTENT = 1024;

/**
 * drbd_gen_and_send_sync_uuid's UUID: the bitmap UUID + 2^48, or a new one when there is no bitmap UUID
 * (or only JUST_CREATED).
 */
export function nextSyncUuid(u: UuidSet): bigint {
  const bm = u[1] & ~1n;
  return bm !== 0n && bm !== 4n ? BigInt.asUintN(64, bm + (1n << 48n)) : newUuid();
}

/** Counters of the running or last resync, for status and tests. */
export interface ResyncStats {
  /** Out-of-sync 4 KiB blocks when the resync started. */
  total: number;
  /** SyncTarget: requests sent and their 4 KiB blocks. */
  requested: number;
  requestedBlocks: number;
  /** Checksum-based: 4 KiB blocks found equal (rs_same_csum), P_RS_IS_IN_SYNC sent or received. */
  sameCsumBlocks: number;
  /** 4 KiB blocks carried in P_RS_DATA_REPLY, sent (SyncSource) or received (SyncTarget). */
  transferredBlocks: number;
  /** The resync is checksum-based (use_checksum_based_resync; the SyncTarget decides). */
  csums: boolean;
  /** SyncSource: requests held back HZ/10 for c-min-rate (application I/O here during the resync). */
  throttledRequests: number;
}

/** 4 KiB blocks a request of `bytes` covers (the last block of a device may be short). */
const blocksOf = (bytes: number) => Math.ceil(bytes / 4096);

export class Resync {
  /** Resync bookkeeping: the counters, requests outstanding, the next bit to look at. */
  private run = {
    total: 0,
    requested: 0,
    requestedBlocks: 0,
    sameCsumBlocks: 0,
    transferredBlocks: 0,
    csums: false,
    throttledRequests: 0,
    inflight: 0,
    cursor: 0,
    startedAt: 0,
  };
  /** SyncTarget: the digest its requests carry (P_CSUM_RS_REQUEST), or none (P_RS_DATA_REQUEST). */
  private csumsAlg: VerifyAlg | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** drbd_rs_number_requests: how much each 100 ms turn asks for, and what is left of this turn. */
  private controller = new ResyncController({ cPlanAhead: 0 });
  private sectIn = 0;
  private budget = 0;
  private nextTurn = 0;
  private appSeq = 0;
  /** Resync sectors requested and not answered yet, now (the controller learns of replies once a turn). */
  private outstanding = 0;
  /** SyncTarget: the peer-write sequence number when each resync request (by sector) was sent. */
  private readonly requestSeq = new Map<number, number>();
  /** SyncTarget: its own application writes (localWriteWhileTarget); doneSeq is Infinity until done. */
  private readonly localWrites = new Set<{ start: number; end: number; doneSeq: number }>();
  /** SyncTarget: application writes received while resyncing, to spot stale resync replies. */
  private peerWrites: { seq: number; start: number; end: number }[] = [];
  private peerDataSeq = 0;
  /** SyncTarget: resync writes in flight; a later application write to the same blocks waits for them. */
  private readonly writes = new Set<{ start: number; end: number; done: Promise<void> }>();
  private isFinishing = false;
  /** SyncSource, c-min-rate (drbd_rs_c_min_rate_throttle): bytes its resync reads, to tell them apart from
   * application I/O; application I/O at the last check; resync sectors answered per recent 100 ms. */
  private sourceReadBytes = 0;
  private lastAppIoBytes = 0;
  private readonly answered: Array<[number, number]> = [];
  /** SyncSource: requests in arrival order, each after the previous one's c-min-rate sleep, if any. */
  private throttle: Promise<void> = Promise.resolve();
  /** A P_SYNC_UUID that came while this node was still StartingSyncT (it travels on the other socket). */
  private pendingSyncUuid: bigint | undefined;

  constructor(
    private readonly link: Link,
    /** A cluster-wide state change the peer must agree to (P_STATE_CHG_REQ). */
    private readonly requestPeerStateChange: PeerStateChangeRequest,
  ) {
    link.state.onSyncStart = () => this.startBookkeeping();
  }

  /** Resync counters for status and tests. */
  get stats(): ResyncStats {
    const { total, requested, requestedBlocks, sameCsumBlocks, transferredBlocks, csums, throttledRequests } =
      this.run;
    return { total, requested, requestedBlocks, sameCsumBlocks, transferredBlocks, csums, throttledRequests };
  }

  /** Resync progress for status: percent done (SyncSource / SyncTarget). */
  get percentDone(): number {
    const total = this.run.total;
    if (total === 0) return 100;
    return Math.floor((1000 * (total - this.link.device.bitmap.outOfSyncBits)) / total) / 10;
  }

  /** The connection went: no more turns. */
  stop(): void {
    clearTimeout(this.timer);
  }

  /** after_state_ch on entering SyncSource / SyncTarget: a new resync starts counting, with a fresh controller. */
  private startBookkeeping(): void {
    const dev = this.link.device;
    this.csumsAlg = this.link.state.name === "SyncTarget" ? this.checksumAlg() : undefined;
    this.run = {
      total: dev.bitmap.outOfSyncBits,
      requested: 0,
      requestedBlocks: 0,
      sameCsumBlocks: 0,
      transferredBlocks: 0,
      csums: this.csumsAlg !== undefined,
      throttledRequests: 0,
      inflight: 0,
      cursor: 0,
      startedAt: Date.now(),
    };
    this.resetController();
    // drbd_rs_controller_reset (drbd_worker.c): rs_last_events starts from the disk's counters now, so the
    // SyncSource's c-min-rate check (drbd_rs_c_min_rate_throttle) does not take I/O from before this resync
    // for application I/O during it. Counting from 0, a resync right after application writes slept its
    // first request HZ/10 and held back every request behind it.
    this.lastAppIoBytes = dev.io.diskReadBytes + dev.io.diskWrittenBytes - this.sourceReadBytes;
    this.answered.length = 0;
  }

  /**
   * use_checksum_based_resync: protocol >= 89, csums-alg set, and — with csums-after-crash-only — only
   * when this node's metadata says its Primary crashed (CRASHED_PRIMARY).
   */
  private checksumAlg(): VerifyAlg | undefined {
    const { csumsAlg, csumsAfterCrashOnly } = this.link.opts;
    if (!csumsAlg || !isVerifyAlg(csumsAlg) || this.link.agreedVersion < 89) return undefined;
    if (csumsAfterCrashOnly && !(this.link.device.superBlock.flags & MDF_CRASHED_PRIMARY)) return undefined;
    return csumsAlg;
  }

  /**
   * The bitmap exchange (WFBitMapS / WFBitMapT): the source sends its bitmap first, the target merges it
   * and answers with its own, which the source merges. RLE (P_COMPRESSED_BITMAP) where it is smaller.
   */
  async exchangeBitmaps(data: PacketStream, source: boolean, t: number): Promise<void> {
    const link = this.link;
    const dev = link.device;
    link.state.change(source ? "WFBitMapS" : "WFBitMapT");
    const sendMine = async () => {
      for (const [cmd, payload] of encodeBitmapPackets(
        dev.bitmap.words,
        dev.bitmap.bits,
        link.agreedVersion,
        true,
      ))
        await link.send(data, cmd, payload);
    };
    const receivePeers = async () => {
      const xfer = new BitmapTransfer(dev.bitmap.bits);
      const peer = Buffer.alloc(dev.bitmap.words.length);
      while (!xfer.done) {
        const p = await data.next(t);
        if (p.header.command === DrbdCommand.Bitmap)
          decodePlainBitmapChunk(p.payload, xfer, peer, link.agreedVersion);
        else if (p.header.command === DrbdCommand.CompressedBitmap)
          decodeRleBitmapChunk(p.payload, xfer, peer, link.agreedVersion);
        // The kernel announces its WFBitMapS/T state while the bitmaps travel (seen with Linux 6.1's DRBD).
        else if (p.header.command === DrbdCommand.State) link.state.peerReported(decodeState(p.payload));
        // A peer that decided to be SyncTarget on our WFBitMapS announces its UUIDs first (a kernel peer's
        // receiver takes P_UUIDS at any time).
        else if (p.header.command === DrbdCommand.Uuids) {
          const u = decodeUuids(p.payload);
          link.peerUuids = [u.current, u.bitmap, u.history[0], u.history[1]];
        } else
          throw new DrbdProtocolError(`expected the peer's bitmap, got ${commandName(p.header.command)}`);
      }
      const added = dev.bitmap.merge(peer);
      link.log.info({ added, stats: xfer.stats }, "received the peer's bitmap");
    };
    if (source) {
      await sendMine();
      await receivePeers();
    } else {
      await receivePeers();
      await sendMine();
    }
    await dev.persistBitmap();
  }

  /**
   * drbd_start_resync as SyncSource with drbd_gen_and_send_sync_uuid: a new bitmap UUID marks this resync
   * and P_SYNC_UUID starts the target. Used by the handshake and by invalidate / invalidate-remote.
   */
  async beginSyncSource(): Promise<void> {
    const link = this.link;
    const dev = link.device;
    if (!(await this.beforeResyncHandler("before-resync-source"))) return;
    const u = dev.uuids;
    const syncUuid = nextSyncUuid(u);
    await dev.setUuids([u[0], syncUuid, u[2], u[3]]);
    // SyncSource before the target can ask for the first block.
    this.enter("SyncSource");
    await link.send(link.data, DrbdCommand.SyncUuid, encodeSyncUuid(syncUuid));
    await link.sendState(ConnState.SyncSource);
  }

  /** receive_sync_uuid then drbd_start_resync as SyncTarget: the source's sync UUID becomes my current. */
  async beginSyncTarget(syncUuid: bigint): Promise<void> {
    const dev = this.link.device;
    if (!(await this.beforeResyncHandler("before-resync-target"))) return;
    const u = dev.uuids;
    const old = u[0] & ~1n;
    await dev.setUuids(old === 4n ? [syncUuid, 0n, u[2], u[3]] : [syncUuid, 0n, old, u[2]]);
    this.enter("SyncTarget");
    await this.link.sendState(ConnState.SyncTarget);
  }

  /**
   * drbd_start_resync: the before-resync-target / -source handler runs first; a non-zero exit drops the
   * connection for good ("dropping connection", C_DISCONNECTING) — except 3 from before-resync-source,
   * which the kernel ignores ("Old userland tools?"). Returns whether the resync may start.
   */
  private async beforeResyncHandler(name: "before-resync-target" | "before-resync-source"): Promise<boolean> {
    const link = this.link;
    if (!link.hasHandler(name)) return true;
    const code = await link.runHandler(name);
    if (code === 0 || (name === "before-resync-source" && code === 3)) return true;
    link.log.warn({ exitCode: code }, `${name} handler returned ${code}, dropping connection.`);
    link.standAlone(`${name} handler returned ${code}`);
    return false;
  }

  private enter(side: SyncSide): void {
    this.link.state.change(side);
    this.link.log.info({ role: side, outOfSyncKiB: this.link.device.bitmap.outOfSyncKiB }, "resync started");
  }

  /**
   * drbdadm invalidate while connected: StartingSyncT, agreed by the peer (its StartingSyncS) through
   * P_STATE_CHG_REQ, every block out of sync on both sides, then a full resync from the peer.
   */
  async invalidate(): Promise<void> {
    const link = this.link;
    const dev = link.device;
    if (dev.role === "Primary")
      throw new DrbdStateError(
        dev.name,
        -2,
        "Need access to UpToDate data (a Primary cannot become SyncTarget here)",
      );
    if (link.state.isUp && link.state.name === "Connected" && link.state.peer?.disk !== DiskState.UpToDate)
      throw new DrbdStateError(dev.name, -2, "Need access to UpToDate data");
    await this.requestSyncStart("StartingSyncT");
  }

  /** drbdadm invalidate-remote while connected: StartingSyncS, the peer's data is overwritten by a full resync. */
  async invalidateRemote(): Promise<void> {
    const link = this.link;
    const dev = link.device;
    if (dev.disk !== "UpToDate") throw new DrbdStateError(dev.name, -2, "Need access to UpToDate data");
    if (link.state.isUp && link.state.name === "Connected" && link.state.peer?.role === Role.Primary)
      throw new DrbdStateError(dev.name, -2, "Need access to UpToDate data (the peer is Primary)");
    await this.requestSyncStart("StartingSyncS");
  }

  private async requestSyncStart(want: "StartingSyncS" | "StartingSyncT"): Promise<void> {
    const state = this.link.state;
    const name = this.link.device.name;
    if (!state.isUp) throw new DrbdStateError(name, -15, STATE_ERROR_TEXT[-15] as string);
    const current = state.name;
    if (current !== "Connected") throw new DrbdStateError(name, -8, STATE_ERROR_TEXT[-8] as string);
    // Enter the state before asking: the peer's P_SYNC_UUID (data socket) may beat its reply (meta socket).
    state.change(want);
    this.pendingSyncUuid = undefined;
    const conn = want === "StartingSyncS" ? ConnState.StartingSyncS : ConnState.StartingSyncT;
    const rv = await this.requestPeerStateChange(stateMask(["conn"]), packState({ conn }));
    if (rv < SS_SUCCESS) {
      if (state.name === want) state.change("Connected");
      throw new DrbdStateError(name, rv, STATE_ERROR_TEXT[rv] ?? "State change was refused by peer node");
    }
    await this.startingSync(want);
  }

  /** StartingSyncS/T asked by the peer (invalidate / invalidate-remote there). */
  acceptPeerSyncStart(conn: ConnState): number {
    const dev = this.link.device;
    const side =
      conn === ConnState.StartingSyncS
        ? "StartingSyncS"
        : conn === ConnState.StartingSyncT
          ? "StartingSyncT"
          : undefined;
    if (!side) return -17; // SS_NOT_SUPPORTED
    if (side === "StartingSyncS" && dev.disk !== "UpToDate") return -2;
    if (side === "StartingSyncT" && dev.role === "Primary") return -2;
    this.link.state.change(side);
    this.startingSync(side).catch((e: Error) => this.link.lost(e));
    return SS_SUCCESS;
  }

  /** after_state_ch for StartingSyncS/T: set and write the whole bitmap, then start (abw_start_sync). */
  private async startingSync(side: "StartingSyncS" | "StartingSyncT"): Promise<void> {
    const link = this.link;
    const dev = link.device;
    link.state.change(side);
    dev.bitmap.setAll();
    link.log.info({ side, bits: dev.bitmap.outOfSyncBits }, "full sync: writing the whole bitmap");
    if (side === "StartingSyncT") await link.state.setDisk("Inconsistent");
    await dev.persistBitmap();
    if (link.state.name !== side) return;
    if (side === "StartingSyncS") {
      await this.beginSyncSource();
      if (dev.bitmap.outOfSyncBits === 0) void this.finish();
      return;
    }
    link.state.change("WFSyncUUID");
    await this.syncUuidArrived();
  }

  /** receive_sync_uuid while StartingSyncT or WFSyncUUID. */
  syncUuidReceived(uuid: bigint): void {
    this.pendingSyncUuid = uuid;
    this.syncUuidArrived().catch((e: Error) => this.link.lost(e));
  }

  /** WFSyncUUID with the source's P_SYNC_UUID in hand: resync as SyncTarget. */
  private async syncUuidArrived(): Promise<void> {
    const uuid = this.pendingSyncUuid;
    if (this.link.state.name !== "WFSyncUUID" || uuid === undefined) return;
    this.pendingSyncUuid = undefined;
    await this.beginSyncTarget(uuid);
    this.pump();
  }

  /**
   * SyncTarget (make_resync_request): each 100 ms turn, request out-of-sync blocks in aligned runs of up
   * to 128 KiB, as many as the resync controller allows, at most 4 MiB outstanding.
   */
  pump(): void {
    const link = this.link;
    if (link.state.name !== "SyncTarget" || !link.data || this.isFinishing) return;
    const dev = link.device;
    const now = Date.now();
    if (now >= this.nextTurn) {
      // One controller turn; application writes from the peer since the last one count for c-min-rate.
      const appActive = this.peerDataSeq !== this.appSeq;
      this.appSeq = this.peerDataSeq;
      // The dynamic controller's turn is whole 4 KiB requests, the rest dropped (drbd_rs_number_requests:
      // `>> (BM_BLOCK_SHIFT - 9)`); at a fixed rate less than a request carries over, so low rates move.
      const carry = this.controller.dynamic ? 0 : this.budget % 8;
      this.budget = carry + this.controller.turn(this.sectIn, now, appActive);
      this.sectIn = 0;
      // Turns keep to a 100 ms grid (the kernel's resync timer): a late timer on a loaded machine does not
      // stretch every later turn, so the rate holds. Late by more than a turn: start a new grid, no burst.
      const next = this.nextTurn + RESYNC_TURN_MS;
      this.nextTurn = next > now ? next : now + RESYNC_TURN_MS;
    }
    while (this.outstanding < MAX_RS_IN_FLIGHT_SECTORS && this.budget >= 8) {
      const first = dev.bitmap.nextSet(this.run.cursor);
      if (first < 0) break;
      // make_resync_request's merging: adjacent set bits, a request only as large as its start is aligned
      // (so runs line up with power-of-two stripes), never across a 4 MiB resync extent.
      let last = first;
      let align = 1;
      while (
        last + 1 < dev.bitmap.bits &&
        last - first < MAX_RS_REQUEST_BLOCKS - 1 &&
        first % (1 << align) === 0 &&
        (last + 1) % BM_BLOCKS_PER_EXTENT !== 0 &&
        dev.bitmap.test(last + 1) &&
        (last - first + 2) * 8 <= this.budget
      ) {
        last++;
        if (1 << align <= last - first + 1) align++;
      }
      this.run.cursor = last + 1;
      const blocks = last - first + 1;
      this.budget -= blocks * 8;
      this.run.inflight++;
      this.run.requested++;
      this.run.requestedBlocks += blocks;
      const sector = (first * 4096) / SECTOR;
      const size = Math.min(blocks * 4096, dev.layout.usableSectors * SECTOR - first * 4096);
      this.controller.requested(size / SECTOR);
      this.outstanding += size / SECTOR;
      this.requestSeq.set(sector, this.peerDataSeq);
      this.sendRequest(sector, size);
    }
    if (this.run.inflight === 0 && dev.bitmap.nextSet(0) < 0) {
      void this.finish();
      return;
    }
    // Wrapped around with bits still set (a request failed): start over from the beginning.
    if (this.run.inflight === 0 && dev.bitmap.nextSet(this.run.cursor) < 0) this.run.cursor = 0;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.pump(), Math.max(1, this.nextTurn - Date.now()));
  }

  /**
   * SyncTarget: P_RS_DATA_REQUEST, or with csums-alg (read_for_csum, w_e_send_csum) P_CSUM_RS_REQUEST with
   * the digest of this node's copy. A local read that fails asks for the data plainly.
   */
  private sendRequest(sector: number, size: number): void {
    const link = this.link;
    const plain = () =>
      link
        .send(link.data, DrbdCommand.RsDataRequest, encodeBlockRequest({ sector, blockId: ID_SYNCER, size }))
        .catch(() => {});
    const alg = this.csumsAlg;
    if (!alg) {
      void plain();
      return;
    }
    link.device.readForPeer(sector * SECTOR, size).then(
      (block) =>
        link
          .send(
            link.data,
            DrbdCommand.CsumRsRequest,
            encodeBlockRequest({ sector, blockId: ID_SYNCER, size, digest: verifyDigest(alg, block) }),
          )
          .catch(() => {}),
      (e: Error) => {
        link.log.warn({ err: e.message, sector }, "csums: local read failed, requesting the data");
        return plain();
      },
    );
  }

  /** A new resync starts with a fresh controller (its plan and in-flight count belong to one resync). */
  private resetController(): void {
    const opts = this.link.opts;
    const rate = opts.resyncRateKiB ?? RESYNC_DEFAULTS.resyncRateKiB;
    const control = opts.resyncControl ?? { ...RESYNC_DEFAULTS, cPlanAhead: 0 };
    this.controller = new ResyncController({ ...control, resyncRateKiB: rate });
    this.sectIn = 0;
    this.budget = 0;
    this.nextTurn = 0;
    this.outstanding = 0;
    this.appSeq = this.peerDataSeq;
  }

  /** drbd_resync_finished: the target takes the source's current UUID and is UpToDate; the source drops its bitmap UUID. */
  async finish(): Promise<void> {
    const was = this.link.state.name;
    if ((was !== "SyncSource" && was !== "SyncTarget") || this.isFinishing) return;
    this.isFinishing = true;
    try {
      await this.finishNow(was);
    } finally {
      this.isFinishing = false;
    }
  }

  private async finishNow(was: SyncSide): Promise<void> {
    const link = this.link;
    const dev = link.device;
    clearTimeout(this.timer);
    await dev.persistBitmap();
    if (was === "SyncTarget") {
      const peerCurrent = (link.peerUuids?.[0] ?? dev.uuids[0]) & ~1n;
      const u = dev.uuids;
      await dev.setUuids([peerCurrent, 0n, u[0] & ~1n, u[2]]);
      await link.state.setDisk("UpToDate");
      // drbd_resync_finished: khelper_cmd "after-resync-target" (e.g. to drop an LVM snapshot).
      void link.runHandler("after-resync-target");
    } else {
      await dev.setUuids(resyncFinished(dev.uuids));
    }
    if (link.state.name === was) link.state.change("Connected");
    const { requested, requestedBlocks, sameCsumBlocks, transferredBlocks, csums, startedAt } = this.run;
    const seconds = Math.max(0.001, (Date.now() - startedAt) / 1000);
    link.log.info(
      {
        was,
        requests: requested,
        blocks: requestedBlocks,
        ...(csums ? { sameCsumBlocks } : {}),
        transferredBlocks,
        seconds,
        // drbd_resync_finished's "K/sec": the bits at the start over the time taken.
        kibPerSecond: Math.round((this.run.total * 4) / seconds),
      },
      "resync done",
    );
    if (csums && this.run.total > 0) {
      // drbd_resync_finished's report of a checksum-based resync (in its terms: of the bits at the start).
      const total = this.run.total;
      const percent = Math.floor((100 * sameCsumBlocks) / total);
      link.log.info(
        `${percent} % had equal checksums, eliminated: ${sameCsumBlocks * 4}K; transferred ${(total - sameCsumBlocks) * 4}K total ${total * 4}K`,
      );
    }
    await link.sendState(ConnState.Connected).catch(() => {});
  }

  /** SyncSource: the resync is over when no bit is left (after a P_RS_WRITE_ACK or a mirrored write). */
  finishIfSourceDone(): void {
    if (this.link.state.name === "SyncSource" && this.link.device.bitmap.outOfSyncBits === 0)
      void this.finish();
  }

  /**
   * SyncSource: a mirrored write the peer confirmed. Whole blocks the peer now has are in sync
   * (DP_MAY_SET_IN_SYNC); the target clears them alike.
   */
  mirroredWhileSource(offset: number, bytes: number): void {
    const dev = this.link.device;
    dev.markWholeBlocksInSync(offset, bytes);
    if (dev.bitmap.outOfSyncBits === 0) void this.finish();
  }

  /**
   * SyncTarget: an application write from the peer for bytes [start, end). It lands after any resync
   * write to the same blocks (and after `epochGate`); its whole blocks count as in sync. Returns what it
   * must wait for.
   */
  peerWriteWhileTarget(start: number, end: number, epochGate: Promise<unknown>): Promise<unknown> {
    this.peerWrites.push({ seq: ++this.peerDataSeq, start, end });
    if (this.requestSeq.size === 0) this.peerWrites = this.peerWrites.slice(-1);
    const overlapping = [...this.writes].filter((w) => w.start < end && start < w.end);
    const before = Promise.all([epochGate, ...overlapping.map((w) => w.done)]);
    this.link.device.markWholeBlocksInSync(start, end - start);
    return before;
  }

  /**
   * The SyncTarget's own application write (a Primary whose re-attached disk is resyncing; the kernel's
   * resync-extent locking in drbd_al_begin_io / drbd_rs_begin_io keeps the two apart): the local write waits
   * for resync writes to the same blocks, and a reply to a request sent before this write completed on both
   * sides may hold older data, so it is dropped (the bit stays; the block is asked for again).
   */
  localWriteWhileTarget(start: number, end: number): { before: Promise<unknown>; done: () => void } {
    const w = { start, end, doneSeq: Infinity };
    this.localWrites.add(w);
    const overlapping = [...this.writes].filter((r) => r.start < end && start < r.end);
    return {
      before: Promise.all(overlapping.map((r) => r.done)),
      done: () => {
        w.doneSeq = ++this.peerDataSeq;
        this.forgetLocalWrites();
        this.pump();
      },
    };
  }

  /** Finished local writes matter only to requests sent before they finished: none outstanding, none left. */
  private forgetLocalWrites(): void {
    if (this.requestSeq.size > 0) return;
    for (const w of this.localWrites) if (w.doneSeq !== Infinity) this.localWrites.delete(w);
  }

  /** receive_DataRequest (P_RS_DATA_REQUEST) as SyncSource: read the block, answer P_RS_DATA_REPLY. */
  receiveDataRequest(payload: Buffer): void {
    const link = this.link;
    const r = link.checkedRequest(payload, "P_RS_DATA_REQUEST", link.state.name === "SyncSource", 1 << 20);
    this.answerRequest(r, undefined);
  }

  /**
   * receive_DataRequest (P_CSUM_RS_REQUEST) as SyncSource, w_e_end_csum_rs_req: the same digest of my copy
   * marks the range in sync here and answers P_RS_IS_IN_SYNC; a different one sends the data.
   */
  receiveCsumRequest(payload: Buffer): void {
    const link = this.link;
    const alg = link.opts.csumsAlg;
    const ok = link.state.name === "SyncSource" && alg !== undefined && isVerifyAlg(alg);
    const r = link.checkedRequest(payload, "P_CSUM_RS_REQUEST", ok, 1 << 20);
    if (!alg || !isVerifyAlg(alg)) return; // (checked above; narrows the type)
    this.run.csums = true;
    this.answerRequest(r, { alg, digest: Buffer.from(r.digest) });
  }

  /**
   * drbd_rs_should_slow_down as receive_DataRequest asks it on the SyncSource (peer not Primary): more
   * than 64 sectors of application I/O on the lower device since the last time it was seen, and the resync
   * answered faster than c-min-rate over the last 3 s.
   */
  private sourceShouldSlowDown(now: number): boolean {
    const link = this.link;
    const min = link.opts.resyncControl?.cMinRateKiB ?? RESYNC_DEFAULTS.cMinRateKiB;
    if (!min || link.state.peer?.role === Role.Primary) return false;
    const io = link.device.io;
    const app = io.diskReadBytes + io.diskWrittenBytes - this.sourceReadBytes;
    if (app - this.lastAppIoBytes <= 64 * SECTOR) return false;
    this.lastAppIoBytes = app;
    while (this.answered.length > 0 && now - (this.answered[0] as [number, number])[0] > 3000)
      this.answered.shift();
    const first = this.answered[0]?.[0] ?? now;
    const sectors = this.answered.reduce((n, [, s]) => n + s, 0);
    const kibPerSecond = sectors / 2 / (Math.max(RESYNC_TURN_MS, now - first + RESYNC_TURN_MS) / 1000);
    return kibPerSecond > min;
  }

  /** SyncSource: `sectors` answered now, in 100 ms buckets (at most 3 s of them kept). */
  private countAnswered(sectors: number, now: number): void {
    const last = this.answered.at(-1);
    if (last && now - last[0] < RESYNC_TURN_MS) last[1] += sectors;
    else this.answered.push([now, sectors]);
    if (this.answered.length > 40) this.answered.shift();
  }

  private answerRequest(
    r: { sector: number; blockId: bigint; size: number },
    csum: { alg: VerifyAlg; digest: Buffer } | undefined,
  ): void {
    const link = this.link;
    // The kernel's receiver takes requests one at a time and sleeps HZ/10 before one when application I/O
    // runs here and the resync is above c-min-rate: the requests pass through one queue that asks the same
    // question as each one's turn comes, so a sleep holds back every request behind it.
    const gate = (this.throttle = this.throttle.then(() => {
      if (!this.sourceShouldSlowDown(Date.now())) return undefined;
      this.run.throttledRequests++;
      return new Promise<void>((resolve) => setTimeout(resolve, RESYNC_TURN_MS));
    }));
    this.countAnswered(r.size / SECTOR, Date.now());
    gate
      .then(() => {
        this.sourceReadBytes += r.size;
        return link.device.readForPeer(r.sector * SECTOR, r.size);
      })
      .then(async (block) => {
        if (csum && verifyDigest(csum.alg, block).equals(csum.digest)) {
          link.device.markInSync(r.sector * SECTOR, r.size);
          this.run.sameCsumBlocks += blocksOf(r.size);
          await link.answerRequest(DrbdCommand.RsIsInSync, r);
          this.finishIfSourceDone();
          return;
        }
        this.run.transferredBlocks += blocksOf(r.size);
        await link.send(
          link.data,
          DrbdCommand.RsDataReply,
          encodeData({
            sector: r.sector,
            blockId: r.blockId,
            seqNum: 0,
            dpFlags: 0,
            digest: Buffer.alloc(0),
            data: block,
          }),
        );
      })
      .catch((e: Error) => {
        link.log.error({ err: e.message, sector: r.sector }, "resync read failed");
        link.answerRequest(DrbdCommand.NegRsDReply, r).catch(() => {});
      });
  }

  /** receive_RSDataReply as SyncTarget: write the block, P_RS_WRITE_ACK, ask for more. */
  receiveDataReply(payload: Buffer): void {
    const link = this.link;
    const d = decodeData(payload);
    if (link.state.name !== "SyncTarget")
      throw new DrbdProtocolError(`P_RS_DATA_REPLY while ${link.state.name}`);
    const ack = { sector: d.sector, blockId: d.blockId, size: d.data.length, seqNum: 0 };
    const start = d.sector * SECTOR;
    const end = start + d.data.length;
    this.sectIn += d.data.length / SECTOR;
    this.outstanding = Math.max(0, this.outstanding - d.data.length / SECTOR);
    this.run.transferredBlocks += blocksOf(d.data.length);
    const askedAt = this.requestSeq.get(d.sector) ?? -1;
    this.requestSeq.delete(d.sector);
    // Newer application data for this range came in after the request: the reply may be older. Drop it
    // without an ack; bits still set are requested again.
    const stale = (w: { start: number; end: number }) => w.start < end && start < w.end;
    const older =
      this.peerWrites.some((w) => w.seq > askedAt && stale(w)) ||
      [...this.localWrites].some((w) => w.doneSeq > askedAt && stale(w));
    this.forgetLocalWrites();
    if (older) {
      this.run.inflight--;
      link.stats.staleResyncReplies++;
      link.stats.staleResyncBlocks += Math.ceil(d.data.length / 4096);
      this.pump();
      return;
    }
    const rsWrite = link.device.writeResyncData(start, d.data);
    const entry = {
      start,
      end,
      done: rsWrite.then(
        () => {},
        () => {},
      ),
    };
    this.writes.add(entry);
    void entry.done.then(() => this.writes.delete(entry));
    rsWrite
      .then(() => link.send(link.meta, DrbdCommand.RsWriteAck, encodeBlockAck(ack)))
      .catch((e: Error) => link.lost(e))
      .finally(() => {
        this.run.inflight--;
        this.pump();
      });
  }

  /** got_IsInSync as SyncTarget: the source has the same data, the range is in sync without a transfer. */
  receiveIsInSync(payload: Buffer): void {
    const link = this.link;
    if (link.state.name !== "SyncTarget")
      throw new DrbdProtocolError(`P_RS_IS_IN_SYNC while ${link.state.name}`);
    const a = decodeBlockAck(payload);
    this.sectIn += a.size / SECTOR;
    this.outstanding = Math.max(0, this.outstanding - a.size / SECTOR);
    this.requestSeq.delete(a.sector);
    this.run.inflight--;
    this.run.sameCsumBlocks += blocksOf(a.size);
    link.device.markInSync(a.sector * SECTOR, a.size);
    this.pump();
  }

  /** got_BlockAck for P_RS_WRITE_ACK: the target has the block, the source marks it in sync. */
  receiveWriteAck(payload: Buffer): void {
    const a = decodeBlockAck(payload);
    this.link.device.markInSync(a.sector * SECTOR, a.size);
    this.finishIfSourceDone();
  }
}
