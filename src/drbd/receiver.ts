/**
 * The receivers of a replicating connection (drbd_receiver.c drbd_receiver / drbd_cmd_handler[] for the
 * data socket, drbd_asender / asender_tbl[] for the meta socket): each packet is dispatched through a table
 * by its command to the part of the connection that handles it. A command without an entry is a protocol
 * error that drops the connection.
 */
import {
  commandName,
  decodeSyncUuid,
  DrbdCommand,
  DrbdProtocolError,
  P_DATA_HEAD,
  type Packet,
} from "./protocol.js";
import type { AheadBehind } from "./ahead_behind.js";
import type { Link } from "./link.js";
import type { PeerWriteReceiver } from "./peer_writes.js";
import type { RemoteReads } from "./remote_reads.js";
import type { RequestSender } from "./request_sender.js";
import type { Resync } from "./resync.js";
import type { StateChangeRequests } from "./state_change_request.js";
import type { SyncHandshake } from "./sync_handshake.js";
import type { VerifyLink } from "./verify_link.js";
import type { ResizeLink } from "./resize_link.js";
import { receiveProtocolUpdate, receiveSyncParams } from "./live_settings.js";

/** A packet's payload; `rest` only for a P_DATA framed as p_data plus slices (Packet.rest). */
type Handler = (payload: Buffer, cmd: DrbdCommand, rest: Buffer[] | undefined) => void;

export interface ConnectionParts {
  link: Link;
  peerWrites: PeerWriteReceiver;
  sender: RequestSender;
  resync: Resync;
  verify: VerifyLink;
  aheadBehind: AheadBehind;
  syncHandshake: SyncHandshake;
  stateRequests: StateChangeRequests;
  remoteReads: RemoteReads;
  resize: ResizeLink;
  /** P_PING_ACK arrived in time. */
  pingAnswered: () => void;
}

export class PacketReceiver {
  private readonly dataHandlers = new Map<DrbdCommand, Handler>();
  private readonly metaHandlers = new Map<DrbdCommand, Handler>();

  constructor(parts: ConnectionParts) {
    const { link, peerWrites, sender, resync, verify, aheadBehind, syncHandshake, stateRequests } = parts;
    const onData = (cmd: DrbdCommand, h: Handler) => this.dataHandlers.set(cmd, h);
    const onMeta = (cmd: DrbdCommand, h: Handler) => this.metaHandlers.set(cmd, h);

    // drbd_cmd_handler[]: the data socket.
    // read_in_block: with a data-integrity-alg the digest is checked (and removed) before anything is written.
    const verified = (p: Buffer, cmd: DrbdCommand) => (link.integrity ? link.integrity.verified(cmd, p) : p);
    onData(DrbdCommand.Data, (p, cmd, rest) => {
      if (rest) peerWrites.receiveData(p, link.integrity ? link.integrity.verifiedParts(p, rest) : rest);
      else {
        // Framed whole (a P_DATA shorter than p_data: decodeDataHead reports it).
        const whole = verified(p, cmd);
        peerWrites.receiveData(whole.subarray(0, P_DATA_HEAD), [whole.subarray(P_DATA_HEAD)]);
      }
    });
    onData(DrbdCommand.Trim, (p, cmd) => peerWrites.receiveDeallocation(cmd, p));
    onData(DrbdCommand.Zeroes, (p, cmd) => peerWrites.receiveDeallocation(cmd, p));
    onData(DrbdCommand.Barrier, (p) => peerWrites.receiveBarrier(p));
    onData(DrbdCommand.State, (p) => syncHandshake.receiveState(p, () => aheadBehind.becomeBehind()));
    onData(DrbdCommand.OutOfSync, (p) => aheadBehind.receiveOutOfSync(p));
    onData(DrbdCommand.Uuids, (p) => syncHandshake.receiveUuids(p));
    onData(DrbdCommand.RsDataRequest, (p) => resync.receiveDataRequest(p));
    onData(DrbdCommand.RsDataReply, (p, cmd) => resync.receiveDataReply(verified(p, cmd)));
    onData(DrbdCommand.CsumRsRequest, (p) => resync.receiveCsumRequest(p));
    onData(DrbdCommand.SyncUuid, (p) => {
      const uuid = decodeSyncUuid(p);
      const state = link.state.name;
      if (state === "Behind") aheadBehind.startResyncFromBehind(uuid);
      else if (state === "StartingSyncT" || state === "WFSyncUUID") resync.syncUuidReceived(uuid);
    });
    onData(DrbdCommand.UnplugRemote, () => {});
    // The peer's net-options / disk-options (drbdadm adjust) on the live connection (live_settings.ts).
    onData(DrbdCommand.ProtocolUpdate, (p) => receiveProtocolUpdate(link, p, link.opts.peerSettingsAdopted));
    onData(DrbdCommand.SyncParam89, (p) => receiveSyncParams(link, p, link.opts.peerSettingsAdopted));
    onData(DrbdCommand.SyncParam, (p) => receiveSyncParams(link, p, link.opts.peerSettingsAdopted));
    // The peer's drbdadm resize, or its answer to ours, or a peer that attached its disk while connected
    // (after_state_ch sends P_SIZES, then P_UUIDS and P_STATE Negotiating start a sync handshake).
    onData(DrbdCommand.Sizes, (p) => parts.resize.receive(p));
    onData(DrbdCommand.DataRequest, (p) => parts.remoteReads.receiveRequest(p));
    onData(DrbdCommand.DataReply, (p, cmd) => parts.remoteReads.receiveReply(verified(p, cmd)));
    onData(DrbdCommand.OvRequest, (p) => verify.receiveRequest(p));
    onData(DrbdCommand.OvReply, (p) => verify.receiveReply(p));
    onData(DrbdCommand.StateChgReq, (p) => stateRequests.receiveRequest(p));
    // The connection-wide form (conn_request_state, protocol >= 100): a kernel peer's `drbdadm disconnect`.
    onData(DrbdCommand.ConnStChgReq, (p) => stateRequests.receiveRequest(p, DrbdCommand.ConnStChgReply));

    // asender_tbl[]: the meta socket.
    onMeta(DrbdCommand.Ping, () => {
      link.stats.pingsAnswered++;
      link.send(link.meta, DrbdCommand.PingAck, Buffer.alloc(0)).catch(() => {});
    });
    onMeta(DrbdCommand.PingAck, () => parts.pingAnswered());
    onMeta(DrbdCommand.WriteAck, (p, cmd) => sender.receiveAck(cmd, p));
    onMeta(DrbdCommand.RecvAck, (p, cmd) => sender.receiveAck(cmd, p));
    onMeta(DrbdCommand.NegAck, (p, cmd) => sender.receiveAck(cmd, p));
    // The target has the block: the source marks it in sync; the last one ends the resync.
    onMeta(DrbdCommand.RsWriteAck, (p) => resync.receiveWriteAck(p));
    onMeta(DrbdCommand.RsIsInSync, (p) => resync.receiveIsInSync(p));
    onMeta(DrbdCommand.NegRsDReply, () => {
      throw new DrbdProtocolError("the SyncSource could not read a block (P_NEG_RS_DREPLY)");
    });
    onMeta(DrbdCommand.OvResult, (p) => verify.receiveResult(p));
    onMeta(DrbdCommand.NegDReply, (p) => parts.remoteReads.receiveNegReply(p));
    onMeta(DrbdCommand.StateChgReply, (p) => stateRequests.receiveReply(p));
    onMeta(DrbdCommand.BarrierAck, (p) => {
      sender.receiveBarrierAck(p);
      aheadBehind.barrierAcked();
    });

    link.dataHandler = (p) => this.onDataPacket(p);
  }

  onDataPacket(p: Packet): void {
    const cmd = p.header.command;
    const handler = this.dataHandlers.get(cmd);
    if (!handler) throw new DrbdProtocolError(`${commandName(cmd)} is not handled while Connected`);
    handler(p.payload, cmd, p.rest);
  }

  onMetaPacket(p: Packet): void {
    const cmd = p.header.command;
    const handler = this.metaHandlers.get(cmd);
    if (!handler) throw new DrbdProtocolError(`unexpected ${commandName(cmd)} on the meta socket`);
    handler(p.payload, cmd, undefined);
  }
}
