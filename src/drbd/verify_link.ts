/**
 * Online verify over the connection (drbd_worker.c w_make_ov_request, w_e_end_ov_req, w_e_end_ov_reply,
 * drbd_ov_out_of_sync_found; drbd_receiver.c receive_DataRequest for P_OV_REQUEST / P_OV_REPLY,
 * got_OVResult): VerifyS asks for a digest of every 4 KiB block at resync-rate, VerifyT answers with its
 * own, the source compares and both mark the blocks that differ. The digests and the run's bookkeeping are
 * in verify.ts.
 */
import {
  ConnState,
  decodeBlockAck,
  DrbdCommand,
  DrbdProtocolError,
  encodeBlockAck,
  encodeBlockRequest,
  ID_IN_SYNC,
  ID_OUT_OF_SYNC,
  ID_SYNCER,
  packState,
  SS_SUCCESS,
  stateMask,
} from "./protocol.js";
import { SECTOR } from "./metadata.js";
import {
  isVerifyAlg,
  OV_BLOCK,
  STATE_ERROR_TEXT,
  verifyDigest,
  VerifyRun,
  VERIFY_ALGS,
  type VerifyCounters,
} from "./verify.js";
import { DrbdStateError } from "./drbd_states.js";
import type { Link } from "./link.js";
import type { PeerStateChangeRequest } from "./state_change_request.js";

export class VerifyLink {
  private run: VerifyRun | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** The counters of the running or last verify run (drbd_status `verify`). */
  last: VerifyCounters | undefined;

  constructor(
    private readonly link: Link,
    /** A cluster-wide state change the peer must agree to (P_STATE_CHG_REQ). */
    private readonly requestPeerStateChange: PeerStateChangeRequest,
  ) {}

  /** Percent done of the running verify run, if any. */
  get percentDone(): number | undefined {
    return this.run?.percent;
  }

  /**
   * drbdadm verify: Connected → VerifyS, the peer agreeing to VerifyT (P_STATE_CHG_REQ), then P_OV_REQUEST
   * for every 4 KiB block at resync-rate. Resolves once the run started; `last` follows it.
   */
  async start(): Promise<void> {
    const link = this.link;
    const name = link.device.name;
    const fail = (code: number) => new DrbdStateError(name, code, STATE_ERROR_TEXT[code] ?? "refused");
    if (!link.state.isUp) throw fail(-15);
    if (link.state.name !== "Connected") throw fail(-8);
    const alg = link.opts.verifyAlg;
    if (!alg) throw fail(-14);
    if (!isVerifyAlg(alg))
      throw new Error(`${name}: verify-alg ${alg} is not one of ${VERIFY_ALGS.join(", ")}`);
    const rv = await this.requestPeerStateChange(stateMask(["conn"]), packState({ conn: ConnState.VerifyS }));
    if (rv < SS_SUCCESS) throw fail(rv);
    if (link.state.name !== "Connected") throw fail(-8);
    const dev = link.device;
    this.run = new VerifyRun("VerifyS", dev.bitmap.bits, dev.layout.usableSectors * SECTOR);
    this.last = this.run.counters(true);
    link.state.change("VerifyS");
    link.log.info({ alg, blocks: dev.bitmap.bits }, "Online Verify start sector: 0");
    await link.sendState(ConnState.VerifyS);
    this.pump();
  }

  /** The peer starts verify (its P_STATE_CHG_REQ for VerifyT, agreed while Connected). */
  acceptAsTarget(): number {
    const link = this.link;
    const dev = link.device;
    this.run = new VerifyRun("VerifyT", dev.bitmap.bits, dev.layout.usableSectors * SECTOR);
    this.last = this.run.counters(true);
    link.state.change("VerifyT");
    link.log.info("online verify started by the peer: VerifyT");
    return SS_SUCCESS;
  }

  /** VerifyS: keep P_OV_REQUESTs flowing at resync-rate, every 100 ms while the run lasts. */
  private pump(): void {
    const link = this.link;
    const run = this.run;
    if (link.state.name !== "VerifyS" || !run) return;
    for (const r of run.nextRequests(link.opts.resyncRateKiB ?? 250))
      link
        .send(
          link.data,
          DrbdCommand.OvRequest,
          encodeBlockRequest({ sector: r.sector, blockId: ID_SYNCER, size: r.size }),
        )
        .catch(() => {});
    clearTimeout(this.timer);
    if (!run.allRequested) this.timer = setTimeout(() => this.pump(), 100);
  }

  /** VerifyT: w_e_end_ov_req — read the block and answer with its digest. */
  receiveRequest(payload: Buffer): void {
    const link = this.link;
    const alg = link.opts.verifyAlg;
    const ok = link.state.name === "VerifyT" && alg !== undefined && isVerifyAlg(alg);
    const r = link.checkedRequest(payload, "P_OV_REQUEST", ok, OV_BLOCK);
    if (!alg || !isVerifyAlg(alg)) return; // (checked above; narrows the type)
    link.device
      .readForPeer(r.sector * SECTOR, r.size)
      .then((block) =>
        link.send(
          link.data,
          DrbdCommand.OvReply,
          encodeBlockRequest({
            sector: r.sector,
            blockId: r.blockId,
            size: r.size,
            digest: verifyDigest(alg, block),
          }),
        ),
      )
      .catch((e: Error) => link.lost(e));
  }

  /** VerifyS: w_e_end_ov_reply — compare with my copy, mark a difference, answer P_OV_RESULT. */
  receiveReply(payload: Buffer): void {
    const link = this.link;
    const alg = link.opts.verifyAlg;
    const run = this.run;
    const ok = link.state.name === "VerifyS" && run !== undefined && alg !== undefined && isVerifyAlg(alg);
    const r = link.checkedRequest(payload, "P_OV_REPLY", ok, OV_BLOCK);
    if (!alg || !run || !isVerifyAlg(alg)) return; // (checked above; narrows the types)
    const peerDigest = Buffer.from(r.digest);
    link.device
      .readForPeer(r.sector * SECTOR, r.size)
      .then(async (block) => {
        if (this.run !== run) return;
        const same = verifyDigest(alg, block).equals(peerDigest);
        if (!same) this.outOfSyncFound(r.sector, r.size);
        run.inflight--;
        run.result(same);
        this.last = run.counters(true);
        const blockId = same ? ID_IN_SYNC : ID_OUT_OF_SYNC;
        await link.send(
          link.meta,
          DrbdCommand.OvResult,
          encodeBlockAck({ sector: r.sector, blockId, size: r.size, seqNum: 0 }),
        );
        if (run.done) await this.finish(run);
        else this.pump();
      })
      .catch((e: Error) => link.lost(e));
  }

  /** VerifyT: got_OVResult. */
  receiveResult(payload: Buffer): void {
    const link = this.link;
    const a = decodeBlockAck(payload);
    const run = this.run;
    if (link.state.name !== "VerifyT" || !run)
      throw new DrbdProtocolError(`P_OV_RESULT while ${link.state.name}`);
    const same = a.blockId === ID_IN_SYNC;
    if (!same) this.outOfSyncFound(a.sector, a.size);
    run.result(same);
    this.last = run.counters(true);
    if (run.done) this.finish(run).catch((e: Error) => link.lost(e));
  }

  /** drbd_ov_out_of_sync_found: the block stays marked until a later resync. */
  private outOfSyncFound(sector: number, size: number): void {
    this.link.device.markOutOfSync(sector * SECTOR, size);
  }

  /** drbd_resync_finished for a verify run: report, keep the marks, back to Connected. */
  private async finish(run: VerifyRun): Promise<void> {
    const link = this.link;
    if (this.run !== run) return;
    this.run = undefined;
    clearTimeout(this.timer);
    this.last = run.counters(false);
    const was = link.state.name;
    await link.device.persistBitmap();
    link.log.info(
      { was, checked: run.checked },
      `Online verify found ${run.outOfSync} 4k blocks out of sync`,
    );
    if (link.state.name === was) link.state.change("Connected");
    await link.sendState(ConnState.Connected).catch(() => {});
  }

  /** The connection went: the run ends where it is. */
  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.run) this.last = this.run.counters(false);
    this.run = undefined;
  }
}
