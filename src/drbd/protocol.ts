/**
 * The DRBD 8.4 wire protocol (protocol versions 86–101) as the Linux kernel's drivers/block/drbd defines it
 * (drbd_protocol.h for layouts, drbd_main.c for senders, drbd_receiver.c for receivers, drbd_vli.h for the
 * compressed bitmap code). This index is the one place to import the wire format from; like the kernel's
 * drbd_protocol.h it names every packet, and says which file under protocol/ holds its layout:
 *
 *   protocol/commands.ts     DrbdCommand (enum drbd_packet), PRO_VERSION_MIN/MAX, the payload size and
 *                            socket each command may have (checkPayloadSize), DrbdProtocolError
 *   protocol/framing.ts      p_header80/95/100 (encodeHeader, decodeHeader, frame) and PacketFramer;
 *                            P_PING, P_PING_ACK, P_UNPLUG_REMOTE, P_INITIAL_DATA/META are a header alone
 *   protocol/handshake.ts    P_CONNECTION_FEATURES (negotiateFeatures), P_AUTH_CHALLENGE, P_AUTH_RESPONSE
 *   protocol/settings.ts     P_PROTOCOL, P_PROTOCOL_UPDATE (protocolMismatch), P_SYNC_PARAM, P_SYNC_PARAM89
 *   protocol/uuids_sizes.ts  P_UUIDS, P_SYNC_UUID, P_SIZES
 *   protocol/state.ts        Role, ConnState, DiskState; P_STATE, P_STATE_CHG_REQ, P_CONN_ST_CHG_REQ and
 *                            their replies
 *   protocol/data.ts         P_DATA, P_DATA_REPLY, P_RS_DATA_REPLY, P_TRIM, P_ZEROES, P_WSAME; the block
 *                            acks (P_RECV_ACK, P_WRITE_ACK, P_RS_WRITE_ACK, P_NEG_ACK, P_OV_RESULT …);
 *                            block requests (P_DATA_REQUEST, P_RS_DATA_REQUEST, P_OV_REQUEST, P_OV_REPLY,
 *                            P_CSUM_RS_REQUEST …); P_OUT_OF_SYNC, P_RS_DEALLOCATED; P_BARRIER,
 *                            P_BARRIER_ACK, P_DELAY_PROBE
 *   protocol/bitmap.ts       P_BITMAP (plain words) and P_COMPRESSED_BITMAP (run-length VLI code)
 *   protocol/codec.ts        bounds-checked reads the decoders share (internal, not re-exported)
 *
 * Everything is big-endian, except that `block_id` and the barrier number are opaque handles the peer echoes
 * unchanged (we read and write them as big-endian u64/u32, which round-trips) and bitmap words, which are
 * little-endian u64 (drbd_bitmap.c keeps them as on-disk LE words).
 */
export * from "./protocol/commands.js";
export * from "./protocol/framing.js";
export * from "./protocol/handshake.js";
export * from "./protocol/settings.js";
export * from "./protocol/uuids_sizes.js";
export * from "./protocol/state.js";
export * from "./protocol/data.js";
export * from "./protocol/bitmap.js";
