/**
 * Command numbers (drbd_protocol.h enum drbd_packet), the dialects spoken, which socket each packet
 * travels on and the payload size the receiver accepts for it (drbd_receiver.c drbd_cmd_handler and
 * asender_tbl).
 */

/** drbd_config.h: the dialects this implementation speaks. */
export const PRO_VERSION_MIN = 86;
export const PRO_VERSION_MAX = 101;

/** drbd_protocol.h enum drbd_packet. */
export enum DrbdCommand {
  Data = 0x00,
  DataReply = 0x01,
  RsDataReply = 0x02,
  Barrier = 0x03,
  Bitmap = 0x04,
  BecomeSyncTarget = 0x05,
  BecomeSyncSource = 0x06,
  UnplugRemote = 0x07,
  DataRequest = 0x08,
  RsDataRequest = 0x09,
  SyncParam = 0x0a,
  Protocol = 0x0b,
  Uuids = 0x0c,
  Sizes = 0x0d,
  State = 0x0e,
  SyncUuid = 0x0f,
  AuthChallenge = 0x10,
  AuthResponse = 0x11,
  StateChgReq = 0x12,
  Ping = 0x13,
  PingAck = 0x14,
  RecvAck = 0x15,
  WriteAck = 0x16,
  RsWriteAck = 0x17,
  Superseded = 0x18,
  NegAck = 0x19,
  NegDReply = 0x1a,
  NegRsDReply = 0x1b,
  BarrierAck = 0x1c,
  StateChgReply = 0x1d,
  OvRequest = 0x1e,
  OvReply = 0x1f,
  OvResult = 0x20,
  CsumRsRequest = 0x21,
  RsIsInSync = 0x22,
  SyncParam89 = 0x23,
  CompressedBitmap = 0x24,
  DelayProbe = 0x27,
  OutOfSync = 0x28,
  RsCancel = 0x29,
  ConnStChgReq = 0x2a,
  ConnStChgReply = 0x2b,
  RetryWrite = 0x2c,
  ProtocolUpdate = 0x2d,
  Trim = 0x31,
  RsThinReq = 0x32,
  RsDeallocated = 0x33,
  WSame = 0x34,
  Zeroes = 0x36,
  InitialMeta = 0xfff1,
  InitialData = 0xfff2,
  ConnectionFeatures = 0xfffe,
}

/** The kernel's name for a command (P_DATA …), for logs and errors. */
export function commandName(cmd: number): string {
  const n = DrbdCommand[cmd];
  if (n === undefined) return `unknown command 0x${cmd.toString(16).padStart(4, "0")}`;
  return "P_" + n.replace(/([a-z0-9])([A-Z])/g, "$1_$2").toUpperCase();
}

/** Which socket a packet travels on: the receiver (data) or the ack receiver (meta); "any" for both. */
export type DrbdSocket = "data" | "meta";

/**
 * Payload size rules per command, as the receiver tables (drbd_receiver.c drbd_cmd_handler for the data
 * socket, asender_tbl for the meta socket) enforce them: `size` is the fixed part; `more` says whether data
 * or a variable part may follow. Meta-socket packets and the handshake packets must match their size exactly.
 * P_INITIAL_DATA/META arrive before the acceptor knows which socket it holds.
 */
const PAYLOAD_RULES: Partial<
  Record<DrbdCommand, { size: number; more: boolean; socket: DrbdSocket | "any" }>
> = {
  [DrbdCommand.Data]: { size: 24, more: true, socket: "data" },
  [DrbdCommand.DataReply]: { size: 24, more: true, socket: "data" },
  [DrbdCommand.RsDataReply]: { size: 24, more: true, socket: "data" },
  [DrbdCommand.Barrier]: { size: 8, more: false, socket: "data" },
  [DrbdCommand.Bitmap]: { size: 0, more: true, socket: "data" },
  [DrbdCommand.UnplugRemote]: { size: 0, more: false, socket: "data" },
  [DrbdCommand.DataRequest]: { size: 24, more: false, socket: "data" },
  [DrbdCommand.RsDataRequest]: { size: 24, more: false, socket: "data" },
  [DrbdCommand.SyncParam]: { size: 4, more: true, socket: "data" },
  [DrbdCommand.Protocol]: { size: 24, more: true, socket: "data" },
  [DrbdCommand.Uuids]: { size: 48, more: false, socket: "data" },
  [DrbdCommand.Sizes]: { size: 32, more: true, socket: "data" },
  [DrbdCommand.State]: { size: 4, more: false, socket: "data" },
  [DrbdCommand.SyncUuid]: { size: 8, more: false, socket: "data" },
  [DrbdCommand.AuthChallenge]: { size: 0, more: true, socket: "data" },
  [DrbdCommand.AuthResponse]: { size: 0, more: true, socket: "data" },
  [DrbdCommand.StateChgReq]: { size: 8, more: false, socket: "data" },
  [DrbdCommand.Ping]: { size: 0, more: false, socket: "meta" },
  [DrbdCommand.PingAck]: { size: 0, more: false, socket: "meta" },
  [DrbdCommand.RecvAck]: { size: 24, more: false, socket: "meta" },
  [DrbdCommand.WriteAck]: { size: 24, more: false, socket: "meta" },
  [DrbdCommand.RsWriteAck]: { size: 24, more: false, socket: "meta" },
  [DrbdCommand.Superseded]: { size: 24, more: false, socket: "meta" },
  [DrbdCommand.NegAck]: { size: 24, more: false, socket: "meta" },
  [DrbdCommand.NegDReply]: { size: 24, more: false, socket: "meta" },
  [DrbdCommand.NegRsDReply]: { size: 24, more: false, socket: "meta" },
  [DrbdCommand.BarrierAck]: { size: 8, more: false, socket: "meta" },
  [DrbdCommand.StateChgReply]: { size: 4, more: false, socket: "meta" },
  [DrbdCommand.OvRequest]: { size: 24, more: false, socket: "data" },
  [DrbdCommand.OvReply]: { size: 24, more: true, socket: "data" },
  [DrbdCommand.OvResult]: { size: 24, more: false, socket: "meta" },
  [DrbdCommand.CsumRsRequest]: { size: 24, more: true, socket: "data" },
  [DrbdCommand.RsIsInSync]: { size: 24, more: false, socket: "meta" },
  [DrbdCommand.SyncParam89]: { size: 132, more: true, socket: "data" },
  [DrbdCommand.CompressedBitmap]: { size: 1, more: true, socket: "data" },
  [DrbdCommand.DelayProbe]: { size: 8, more: false, socket: "any" },
  [DrbdCommand.OutOfSync]: { size: 16, more: false, socket: "data" },
  [DrbdCommand.RsCancel]: { size: 24, more: false, socket: "meta" },
  [DrbdCommand.ConnStChgReq]: { size: 8, more: false, socket: "data" },
  [DrbdCommand.ConnStChgReply]: { size: 4, more: false, socket: "meta" },
  [DrbdCommand.RetryWrite]: { size: 24, more: false, socket: "meta" },
  [DrbdCommand.ProtocolUpdate]: { size: 24, more: true, socket: "data" },
  [DrbdCommand.Trim]: { size: 28, more: false, socket: "data" },
  [DrbdCommand.RsThinReq]: { size: 24, more: false, socket: "data" },
  [DrbdCommand.RsDeallocated]: { size: 16, more: false, socket: "data" },
  [DrbdCommand.WSame]: { size: 28, more: true, socket: "data" },
  [DrbdCommand.Zeroes]: { size: 28, more: false, socket: "data" },
  [DrbdCommand.InitialMeta]: { size: 0, more: false, socket: "any" },
  [DrbdCommand.InitialData]: { size: 0, more: false, socket: "any" },
  [DrbdCommand.ConnectionFeatures]: { size: 72, more: false, socket: "data" },
};

export class DrbdProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DrbdProtocolError";
  }
}

/** Rejects payload lengths the command cannot have (the kernel drops the connection for these). */
export function checkPayloadSize(
  command: number,
  length: number,
  maxPayload: number,
  socket?: DrbdSocket,
): void {
  const rule = PAYLOAD_RULES[command as DrbdCommand];
  if (!rule) throw new DrbdProtocolError(`${commandName(command)} (payload ${length} bytes)`);
  if (socket && rule.socket !== "any" && rule.socket !== socket)
    throw new DrbdProtocolError(`unexpected ${commandName(command)} on the ${socket} socket`);
  if (length > maxPayload)
    throw new DrbdProtocolError(
      `oversized packet: ${commandName(command)} of ${length} bytes exceeds ${maxPayload}`,
    );
  if (length < rule.size)
    throw new DrbdProtocolError(
      `truncated packet: ${commandName(command)} needs ${rule.size} bytes, got ${length}`,
    );
  if (!rule.more && length > rule.size)
    throw new DrbdProtocolError(
      `oversized packet: ${commandName(command)} has ${rule.size} bytes, got ${length}`,
    );
}
