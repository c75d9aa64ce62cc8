/**
 * The sync handshake (drbd_receiver.c drbd_sync_handshake, drbd_asb_recover_*p, receive_uuids,
 * receive_state with CONSIDER_RESYNC): compare the generation UUIDs with the peer's, settle a split brain
 * by the after-sb policies or --discard-my-data, and start the bitmap exchange and resync the decision asks
 * for — on connecting, and again while Connected when the peer's state or UUIDs ask for it.
 */
import {
  commandName,
  decodeState,
  decodeSyncUuid,
  decodeUuids,
  DrbdCommand,
  encodeState,
  DrbdProtocolError,
  ConnState,
  DiskState,
  Role,
  UUID_FLAG_CRASHED_PRIMARY,
  UUID_FLAG_DISCARD_MY_DATA,
  UUID_FLAG_SKIP_INITIAL_SYNC,
  type DrbdState,
} from "./protocol.js";
import { MDF_CRASHED_PRIMARY, newUuid } from "./metadata.js";
import { compareUuids, newCurrentUuidAtSplit, type UuidSet } from "./uuids.js";
import { considerResync, peerForcedPrimary } from "./consider_resync.js";
import { DEFAULT_AFTER_SB, discardMyDataVerdict, recoverSplitBrain } from "./after_sb.js";
import { diskStateOnWire } from "./drbd_states.js";
import { diskStateFromFlags } from "./device_attach.js";
import type { Link } from "./link.js";
import type { PacketStream } from "./packet_stream.js";
import type { Resync } from "./resync.js";

export class SyncHandshake {
  /** CONSIDER_RESYNC (consider_resync.ts). */
  private considerResyncFlag = false;
  /** Result of the last sync decision (for status and tests). */
  lastDecision: { result: number; rule: number } | undefined;
  /** How the last split brain was handled (for status and tests). */
  lastSplitBrain:
    { primaries: number; result: number; by: "after-sb" | "discard-my-data" | "unresolved" } | undefined;

  constructor(
    private readonly link: Link,
    private readonly resync: Resync,
  ) {}

  /**
   * drbd_sync_handshake on connecting, once both sides' P_UUIDS and P_STATE are in: Connected, a resync
   * (bitmap exchange, then SyncSource or SyncTarget), or StandAlone with the reason.
   */
  async onConnect(data: PacketStream, peerUuids: UuidSet, t: number): Promise<"connected" | "standalone"> {
    const link = this.link;
    const decision = this.compareWithPeer(peerUuids, "uuid compare");
    if (decision.result === -1000) return link.refuse("Unrelated data, aborting!");
    // drbd_sync_handshake: the initial-split-brain handler on every split brain, split-brain when unresolved.
    if (Math.abs(decision.result) === 100) void link.runHandler("initial-split-brain");
    const hg =
      Math.abs(decision.result) === 100 ? await this.resolveSplitBrain(decision.result) : decision.result;
    // discard-my-data is one-shot: the next connect without it is an ordinary one (receive_state).
    link.discardMyData = false;
    if (hg === -100) {
      void link.runHandler("split-brain");
      return link.refuse("Split-Brain detected but unresolved, dropping connection!");
    }
    if (hg !== 0) {
      const dev = link.device;
      const source = hg > 0;
      // An Inconsistent source or a Primary target cannot be right (drbd_sync_handshake).
      if (source && dev.disk === "Inconsistent")
        return link.refuse("I shall become SyncSource, but I am inconsistent!");
      if (!source && dev.role === "Primary")
        return link.refuse("I shall become SyncTarget, but I am primary!");
      if (Math.abs(hg) >= 2) {
        dev.bitmap.setAll();
        link.log.info({ bits: dev.bitmap.outOfSyncBits }, "full sync: writing the whole bitmap");
      }
      if (!source) await link.state.setDisk("Inconsistent");
      await this.exchangeBitmapsAndStart(data, source, t);
      return "connected";
    }
    link.state.change("Connected");
    await link.send(data, DrbdCommand.State, encodeStateOf(link, ConnState.Connected));
    link.log.info({ agreedVersion: link.agreedVersion, protocol: link.protocol }, "Connected");
    return "connected";
  }

  /**
   * receive_state when either side has no disk: there is no sync handshake (it needs a local disk and a
   * peer disk of at least D_NEGOTIATING), the pair goes Connected as Diskless/UpToDate (or the reverse).
   * A Diskless Primary only connects to the data generation it exposes (receive_uuids: "Can only connect to
   * data with current UUID"); a node with the disk and a Diskless Primary peer starts a new generation, the
   * point from which the peer's writes are tracked for its re-attach (after_state_ch: pdsk < D_INCONSISTENT,
   * the peer became Primary, no bitmap UUID yet).
   */
  async onConnectDiskless(data: PacketStream): Promise<"connected" | "standalone"> {
    const link = this.link;
    const dev = link.device;
    link.discardMyData = false;
    if (dev.disk === "Diskless") {
      const peerCurrent = link.peerUuids?.[0];
      if (peerCurrent !== undefined) {
        if (dev.role === "Primary" && (peerCurrent & ~1n) !== (dev.uuids[0] & ~1n))
          return link.refuse(
            `Can only connect to data with current UUID=${(dev.uuids[0] & ~1n).toString(16).toUpperCase()}`,
          );
        dev.adoptExposedUuid(peerCurrent);
      }
    }
    link.state.change("Connected");
    await link.send(data, DrbdCommand.State, encodeStateOf(link, ConnState.Connected));
    const peer = link.state.peer;
    if (
      dev.disk === "UpToDate" &&
      peer?.role === Role.Primary &&
      peer.disk < DiskState.Inconsistent &&
      dev.uuids[1] === 0n
    ) {
      const u = newCurrentUuidAtSplit(dev.uuids);
      link.log.info({ current: u[0].toString(16) }, "new current UUID (a Diskless Primary connected)");
      await dev.setUuids(u);
      await link.sendUuids();
    }
    link.log.info(
      { agreedVersion: link.agreedVersion, disk: dev.disk, peerDisk: link.state.peerDiskName },
      "Connected (no sync handshake: a side has no disk)",
    );
    return "connected";
  }

  /**
   * receive_state while Connected: whether this P_STATE starts the sync handshake again (a peer forced to
   * Primary, or a peer that already went WFBitMapS/T). If so the data socket is read in sequence until the
   * resync runs; returns true.
   */
  considerSyncHandshake(before: DrbdState | undefined, after: DrbdState): boolean {
    const link = this.link;
    const c = considerResync({
      myDisk: diskStateOnWire(link.device.disk),
      before,
      after,
      flag: this.considerResyncFlag,
    });
    this.considerResyncFlag = c.flag;
    // StartingSyncS/T come with P_STATE_CHG_REQ, which Resync.acceptPeerSyncStart handles.
    const viaRequest = after.conn === ConnState.StartingSyncS || after.conn === ConnState.StartingSyncT;
    if (!c.run || viaRequest || link.state.name !== "Connected" || !link.data) return false;
    const data = link.data;
    data.pause();
    this.whileConnected(data)
      .then(() => {
        if (link.data !== data) return;
        link.dispatchData(data);
        if (link.state.name === "SyncTarget") this.resync.pump();
      })
      .catch((e: Error) => link.lost(e));
    return true;
  }

  /** A peer role change the peer asked for was agreed: a forced Primary peer sets CONSIDER_RESYNC. */
  peerRoleChanged(role: Role): void {
    this.considerResyncFlag ||= peerForcedPrimary(
      diskStateOnWire(this.link.device.disk),
      this.link.state.peer,
      role,
    );
  }

  /** drbd_uuid_compare against the peer's last P_UUIDS, kept for status and logged as `what`. */
  private compareWithPeer(peer: UuidSet, what: string): { result: number; rule: number } {
    const link = this.link;
    const dev = link.device;
    const decision = compareUuids({
      mine: dev.uuids,
      peer,
      myCrashedPrimary: (dev.superBlock.flags & MDF_CRASHED_PRIMARY) !== 0,
      peerCrashedPrimary: (link.peerUuidFlags & UUID_FLAG_CRASHED_PRIMARY) !== 0,
      resolveConflicts: link.resolveConflicts,
    });
    this.lastDecision = decision;
    link.log.info({ ...decision }, what);
    return decision;
  }

  /** drbd_sync_handshake on a Connected pair, then the bitmap exchange and the resync as on connecting. */
  private async whileConnected(data: PacketStream): Promise<void> {
    const link = this.link;
    const dev = link.device;
    const t = link.timeoutMs;
    if (!link.peerUuids) return;
    const hg = this.compareWithPeer(link.peerUuids, "uuid compare while connected").result;
    const source = hg > 0;
    // drbd_sync_handshake: a Primary may become SyncTarget only while its disk is below D_CONSISTENT,
    // i.e. while it attaches ("by intention we do not use mydisk here").
    // Cleared once WFBitMapT is entered (the attach's write gate waits for that) or when no resync follows.
    const attaching = link.state.attaching;
    if (attaching && (source || hg === 0 || Math.abs(hg) >= 100)) link.state.attaching = false;
    if (attaching && hg === 0) await this.attachedInSync();
    if (hg === 0 || Math.abs(hg) >= 100) return;
    if (source && dev.disk === "Inconsistent") return;
    if (!source && dev.role === "Primary" && !attaching) return;
    if (Math.abs(hg) >= 2) dev.bitmap.setAll();
    if (source && link.state.peer?.disk === DiskState.Negotiating) {
      // A peer attaching its disk runs its own sync handshake on this P_STATE (receive_state, its disk is
      // Negotiating) and takes a bitmap only once it is WFBitMapT.
      link.state.change("WFBitMapS");
      await link.sendUuids();
      await link.send(data, DrbdCommand.State, encodeStateOf(link, ConnState.WFBitMapS));
    }
    if (!source) {
      // "we want resync, peer has not yet decided": the source decides alike on seeing WFBitMapT.
      await link.state.setDisk("Inconsistent");
      link.state.change("WFBitMapT");
      link.state.attaching = false;
      await link.sendUuids();
      await link.send(data, DrbdCommand.State, encodeStateOf(link, ConnState.WFBitMapT));
    }
    await this.exchangeBitmapsAndStart(data, source, t);
  }

  /**
   * drbd_adm_attach while Connected, after the metadata is read again: P_SIZES, P_UUIDS and P_STATE with
   * disk Negotiating ("Last part of the attaching process", after_state_ch). The peer runs the sync
   * handshake on that P_STATE (consider_resync.ts) and, when it has newer data, goes WFBitMapS; its P_STATE
   * runs ours (whileConnected) and the resync brings this disk up to date. When the UUIDs say both have the
   * same data, the peer does nothing and this node decides alone (attachedInSync).
   */
  async attachedWhileConnected(sendSizes: () => Promise<void>): Promise<void> {
    const link = this.link;
    await sendSizes();
    await link.sendUuids();
    await link.sendState(ConnState.Connected);
    const peer = link.peerUuids;
    if (
      peer &&
      compareUuids({
        mine: link.device.uuids,
        peer,
        myCrashedPrimary: false,
        peerCrashedPrimary: false,
        resolveConflicts: link.resolveConflicts,
      }).result === 0 &&
      link.state.attaching
    ) {
      link.state.attaching = false;
      await this.attachedInSync();
    }
  }

  /** An attach whose UUIDs equal the peer's: the disk takes the state its metadata records (UpToDate). */
  private async attachedInSync(): Promise<void> {
    const link = this.link;
    const disk = diskStateFromFlags(link.device.superBlock.flags);
    link.log.info({ disk }, "attached: same data generation as the peer, no resync");
    await link.state.setDisk(disk);
  }

  /** WFBitMapS/T, then the resync: the source sends P_SYNC_UUID, the target waits for it (WFSyncUUID). */
  private async exchangeBitmapsAndStart(data: PacketStream, source: boolean, t: number): Promise<void> {
    await this.resync.exchangeBitmaps(data, source, t);
    if (source) await this.resync.beginSyncSource();
    else {
      this.link.state.change("WFSyncUUID");
      await this.resync.beginSyncTarget(
        decodeSyncUuid(await this.expectAfterStates(data, DrbdCommand.SyncUuid, t)),
      );
    }
  }

  /** `cmd` next, taking the P_STATE packets a kernel peer sends between handshake steps on the way. */
  private async expectAfterStates(data: PacketStream, cmd: DrbdCommand, t: number): Promise<Buffer> {
    for (;;) {
      const p = await data.next(t);
      if (p.header.command === cmd) return p.payload;
      if (p.header.command !== DrbdCommand.State)
        throw new DrbdProtocolError(`expected ${commandName(cmd)}, got ${commandName(p.header.command)}`);
      this.link.state.peerReported(decodeState(p.payload));
    }
  }

  /**
   * drbd_sync_handshake for ±100: +100 (both changed since a shared generation), or −100 (ambiguous
   * histories) with always-asbp, goes to the after-sb policy; what it leaves unresolved may be settled by
   * --discard-my-data. Returns ±1 (bitmap-based), ±2 (full, ambiguous case) or −100.
   */
  private async resolveSplitBrain(uuidResult: number): Promise<number> {
    const link = this.link;
    const dev = link.device;
    let hg = -100;
    const myPrimary = dev.role === "Primary";
    const peerPrimary = link.state.peer?.role === Role.Primary;
    const primaries = (myPrimary ? 1 : 0) + (peerPrimary ? 1 : 0);
    if (uuidResult === 100 || link.opts.alwaysAsbp) {
      const v = recoverSplitBrain({
        policies: link.opts.afterSb ?? DEFAULT_AFTER_SB,
        myPrimary,
        peerPrimary,
        myBitmapUuid: dev.uuids[1],
        peerBitmapUuid: link.peerUuids?.[1] ?? 0n,
        myChanges: link.myBitsSent,
        peerChanges: link.peerBitsSet,
        resolveConflicts: link.resolveConflicts,
      });
      if (v.configError) link.log.error({ primaries }, "Configuration error.");
      if (v.fellBack)
        link.log.warn("Discard younger/older primary did not find a decision, using discard-least-changes");
      let lost = false;
      if (v.demoteSelf && link.hasHandler("pri-lost-after-sb")) {
        // drbd_asb_recover_1p/2p: the kernel's demotion fails while the device is open, and then runs the
        // pri-lost-after-sb handler (which usually reboots the node); the split brain stays unresolved.
        link.log.warn("call-pri-lost-after-sb: running the pri-lost-after-sb handler");
        await link.runHandler("pri-lost-after-sb");
        lost = true;
      } else if (v.demoteSelf) {
        // call-pri-lost-after-sb without a handler: the losing Primary gives up its role (always possible
        // here), so its data can be overwritten; nothing is rebooted.
        await dev.secondary();
        link.log.warn("Successfully gave up primary role.");
      }
      if (!lost && Math.abs(v.result) < 100) {
        link.log.warn(
          `Split-Brain detected, ${primaries} primaries, automatically solved. Sync from ${v.result < 0 ? "peer" : "this"} node`,
        );
        hg = uuidResult === -100 ? v.result * 2 : v.result;
        if (uuidResult === -100) link.log.warn("Doing a full sync, since UUIDs where ambiguous.");
        this.lastSplitBrain = { primaries, result: hg, by: "after-sb" };
        return hg;
      }
    }
    hg = discardMyDataVerdict(link.discardMyData, (link.peerUuidFlags & UUID_FLAG_DISCARD_MY_DATA) !== 0);
    if (hg !== -100) {
      link.log.warn(`Split-Brain detected, manually solved. Sync from ${hg < 0 ? "peer" : "this"} node`);
      this.lastSplitBrain = { primaries, result: hg, by: "discard-my-data" };
      return hg;
    }
    this.lastSplitBrain = { primaries, result: -100, by: "unresolved" };
    return -100;
  }

  /**
   * new-current-uuid --clear-bitmap on a connected pair that has never synced (both current UUIDs
   * JUST_CREATED, both Inconsistent): both sides take one new generation and become UpToDate without the
   * initial full sync (P_UUIDS with UUID_FLAG_SKIP_INITIAL_SYNC, drbd_nl.c drbd_adm_new_c_uuid).
   */
  async skipInitialSync(): Promise<void> {
    const link = this.link;
    const dev = link.device;
    if (link.state.name !== "Connected")
      throw new Error(
        `${dev.name}: new-current-uuid --clear-bitmap needs the Connected state, not ${link.state.name}`,
      );
    if ((dev.uuids[0] & ~1n) !== 4n || ((link.peerUuids?.[0] ?? 0n) & ~1n) !== 4n)
      throw new Error(
        `${dev.name}: skipping the initial sync needs both sides just created (current UUID 4)`,
      );
    const u = newUuid();
    dev.bitmap.clearAll();
    await dev.persistBitmap();
    await dev.setUuids([u, 0n, 0n, 0n]);
    await link.state.setDisk("UpToDate");
    await link.sendUuids(BigInt(UUID_FLAG_SKIP_INITIAL_SYNC));
  }

  /** receive_uuids while connected: kept for the next sync decision; the peer may skip the initial sync. */
  receiveUuids(payload: Buffer): void {
    const link = this.link;
    const u = decodeUuids(payload);
    link.peerUuids = [u.current, u.bitmap, u.history[0], u.history[1]];
    const dev = link.device;
    // receive_uuids: Diskless and connected, the data this node exposes is the peer's (drbd_set_ed_uuid).
    if (dev.disk === "Diskless") dev.adoptExposedUuid(u.current);
    if (u.flags & BigInt(UUID_FLAG_SKIP_INITIAL_SYNC) && (dev.uuids[0] & ~1n) === 4n) {
      // The peer cleared the bitmap for both: take its generation, UpToDate without a sync.
      dev.bitmap.clearAll();
      const adopt = async () => {
        await dev.persistBitmap();
        await dev.setUuids([u.current & ~1n, 0n, 0n, 0n]);
        await link.state.setDisk("UpToDate");
        link.log.info("initial sync skipped by the peer (new-current-uuid --clear-bitmap)");
      };
      adopt().catch((e: Error) => link.lost(e));
    }
  }

  /** receive_state while Connected: the peer's new state; it may start the sync handshake or Behind. */
  receiveState(payload: Buffer, becomeBehind: () => void): void {
    const link = this.link;
    const before = link.state.peer;
    const after = decodeState(payload);
    link.state.peerReported(after);
    if (this.considerSyncHandshake(before, after)) return;
    // receive_state: the peer pulled ahead of us.
    if (after.conn === ConnState.Ahead && link.state.name === "Connected") becomeBehind();
  }
}

function encodeStateOf(link: Link, conn: ConnState): Buffer {
  return encodeState(link.state.localState(conn));
}
