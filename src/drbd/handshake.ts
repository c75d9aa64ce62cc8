/**
 * The connection handshake on the data socket (drbd_receiver.c conn_connect after the sockets are paired,
 * drbd_do_features, drbd_do_auth, receive_protocol, receive_SyncParam, receive_sizes, receive_uuids,
 * receive_state): P_CONNECTION_FEATURES, optional CRAM-HMAC, P_PROTOCOL, P_SYNC_PARAM89, P_SIZES, P_UUIDS,
 * P_STATE both ways; then the sync handshake (sync_handshake.ts) decides.
 */
import {
  authResponse,
  checkPeerChallenge,
  CF_DISCARD_MY_DATA,
  commandName,
  ConnState,
  decodeConnectionFeatures,
  decodeProtocol,
  decodeSizes,
  decodeState,
  decodeSyncParams,
  decodeUuids,
  DiskState,
  DrbdCommand,
  DrbdProtocolError,
  encodeConnectionFeatures,
  encodeProtocol,
  encodeSizes,
  encodeSyncParams,
  FF_TRIM,
  FF_WZEROES,
  makeChallenge,
  maxBioSizeFor,
  negotiateFeatures,
  PRO_VERSION_MAX,
  PRO_VERSION_MIN,
  protocolMismatch,
  verifyAuthResponse,
  WIRE_PROTOCOL,
  type ProtocolParams,
} from "./protocol.js";
import { RESYNC_DEFAULTS } from "./resync_controller.js";
import { DEFAULT_AFTER_SB } from "./after_sb.js";
import { PacketStream, type RawSocket } from "./packet_stream.js";
import { DataIntegrity } from "./integrity.js";
import type { Link } from "./link.js";
import type { SyncHandshake } from "./sync_handshake.js";
import type { UuidSet } from "./uuids.js";

/**
 * Runs the handshake on a freshly paired data and meta socket; the link's packet streams are set. Resolves
 * "connected" (replicating, possibly resyncing) or "standalone" (the link's lastError says why).
 */
export async function handshake(
  link: Link,
  syncHandshake: SyncHandshake,
  dataSock: RawSocket,
  metaSock: RawSocket,
): Promise<"connected" | "standalone"> {
  if ((await handshakeConnection(link, dataSock, metaSock)) === "standalone") return "standalone";
  return handshakeVolume(link, syncHandshake, link.data as PacketStream);
}

/**
 * The connection-wide part (conn_connect up to drbd_send_protocol / receive_protocol): features,
 * authentication, P_PROTOCOL. The link's packet streams, agreed version, features and integrity are set.
 */
export async function handshakeConnection(
  link: Link,
  dataSock: RawSocket,
  metaSock: RawSocket,
): Promise<"agreed" | "standalone"> {
  const opts = link.opts;
  const t = link.timeoutMs;
  const data = new PacketStream(dataSock, "data");
  const meta = new PacketStream(metaSock, "meta");
  link.data = data;
  link.meta = meta;
  link.agreedVersion = 0;
  link.integrity = undefined;
  data.socket.setNoDelay(true);
  meta.socket.setNoDelay(true);
  // drbd_do_features
  // Discards (P_TRIM) and zeroing (P_ZEROES) are replicated; WSAME and THIN_RESYNC are not offered.
  const mine = {
    protocolMin: PRO_VERSION_MIN,
    protocolMax: PRO_VERSION_MAX,
    featureFlags: opts.featureFlags ?? FF_TRIM | FF_WZEROES,
  };
  await link.send(data, DrbdCommand.ConnectionFeatures, encodeConnectionFeatures(mine));
  const agreed = negotiateFeatures(
    mine,
    decodeConnectionFeatures(await data.expect(DrbdCommand.ConnectionFeatures, t)),
  );
  if (typeof agreed === "string") return link.refuse(agreed);
  link.agreedVersion = agreed.agreedVersion;
  link.agreedFeatures = agreed.agreedFeatures;
  data.setAgreedVersion(link.agreedVersion);
  meta.setAgreedVersion(link.agreedVersion);
  // drbd_do_auth
  if (opts.cramHmacAlg !== undefined && opts.sharedSecret !== undefined) {
    const alg = opts.cramHmacAlg;
    const secret = opts.sharedSecret;
    const challenge = makeChallenge();
    await link.send(data, DrbdCommand.AuthChallenge, challenge);
    const peerChallenge = await data.expect(DrbdCommand.AuthChallenge, t);
    const bad = checkPeerChallenge(peerChallenge, challenge);
    if (bad) return link.refuse(`authentication failed: ${bad}`);
    await link.send(data, DrbdCommand.AuthResponse, authResponse(alg, secret, peerChallenge));
    const response = await data.expect(DrbdCommand.AuthResponse, t);
    if (!verifyAuthResponse(alg, secret, challenge, response))
      return link.refuse("authentication of peer failed (wrong shared-secret?)");
    link.log.info({ alg }, "peer authenticated");
  }
  // P_PROTOCOL
  const asb = opts.afterSb ?? DEFAULT_AFTER_SB;
  const params: ProtocolParams = {
    protocol: WIRE_PROTOCOL[link.protocol],
    afterSb0p: asb.after0p,
    afterSb1p: asb.after1p,
    afterSb2p: asb.after2p,
    connFlags: link.discardMyData ? CF_DISCARD_MY_DATA : 0,
    twoPrimaries: false,
    // Sent from protocol 87 on (encodeProtocol); an older peer has none, so none is used.
    integrityAlg: link.agreedVersion >= 87 ? (opts.dataIntegrityAlg ?? "") : "",
  };
  await link.send(data, DrbdCommand.Protocol, encodeProtocol(params, link.agreedVersion));
  const peerParams = decodeProtocol(await data.expect(DrbdCommand.Protocol, t), link.agreedVersion);
  const mismatch = protocolMismatch(params, peerParams);
  if (mismatch) return link.refuse(`incompatible ${mismatch} settings`);
  // receive_protocol: both named the same data-integrity-alg; from now on data packets carry its digest.
  link.integrity = params.integrityAlg ? new DataIntegrity(params.integrityAlg) : undefined;
  if (link.integrity) link.log.info({ alg: link.integrity.alg }, "data-integrity-alg in use");
  return "agreed";
}

/**
 * One volume's part (drbd_connected): P_SYNC_PARAM89, P_SIZES, P_UUIDS, P_STATE both ways on `data`, then
 * the sync handshake (sync_handshake.ts) decides.
 */
export async function handshakeVolume(
  link: Link,
  syncHandshake: SyncHandshake,
  data: PacketStream,
): Promise<"connected" | "standalone"> {
  const opts = link.opts;
  const t = link.timeoutMs;
  const sp = encodeSyncParams(
    {
      resyncRate: opts.resyncRateKiB ?? 250,
      verifyAlg: opts.verifyAlg ?? "",
      csumsAlg: opts.csumsAlg ?? "",
      cPlanAhead: opts.resyncControl?.cPlanAhead ?? 0,
      cDelayTarget: opts.resyncControl?.cDelayTarget ?? RESYNC_DEFAULTS.cDelayTarget,
      cFillTarget: opts.resyncControl?.cFillTarget ?? RESYNC_DEFAULTS.cFillTarget,
      cMaxRate: opts.resyncControl?.cMaxRateKiB ?? RESYNC_DEFAULTS.cMaxRateKiB,
    },
    link.agreedVersion,
  );
  await link.send(data, sp.command, sp.payload);
  await sendSizes(link, data);
  await link.sendUuids();
  await link.sendState(ConnState.WFReportParams);
  let peerSizes: number | undefined;
  // A Diskless peer sends no P_UUIDS: its P_STATE (after P_SIZES) completes the exchange.
  const peerDiskless = () => (link.state.peer?.disk ?? DiskState.DUnknown) < DiskState.Negotiating;
  while (!link.state.peer || peerSizes === undefined || (!link.peerUuids && !peerDiskless())) {
    const p = await data.next(t);
    switch (p.header.command) {
      case DrbdCommand.SyncParam:
      case DrbdCommand.SyncParam89: {
        // receive_SyncParam: both sides must name the same verify-alg.
        const sp = decodeSyncParams(p.payload, link.agreedVersion);
        const peerAlg = sp.verifyAlg;
        const mineAlg = opts.verifyAlg ?? "";
        if (peerAlg !== undefined && peerAlg !== mineAlg)
          return link.refuse(`Different verify-alg settings. me="${mineAlg}" peer="${peerAlg}"`);
        // And the same csums-alg (receive_SyncParam, protocol >= 89).
        const mineCsums = opts.csumsAlg ?? "";
        if (sp.csumsAlg !== undefined && sp.csumsAlg !== mineCsums)
          return link.refuse(`Different csums-alg settings. me="${mineCsums}" peer="${sp.csumsAlg}"`);
        break;
      }
      case DrbdCommand.Sizes:
        peerSizes = link.peerDiskSectors = decodeSizes(p.payload).diskSize;
        // receive_sizes: two nodes without a disk have no data between them.
        if (peerSizes === 0 && link.device.disk === "Diskless")
          return link.refuse("some backing storage is needed");
        break;
      case DrbdCommand.Uuids: {
        const u = decodeUuids(p.payload);
        link.peerUuids = [u.current, u.bitmap, u.history[0], u.history[1]];
        link.peerUuidFlags = Number(u.flags);
        link.peerBitsSet = Number(u.bitsSet);
        break;
      }
      case DrbdCommand.State:
        link.state.peerReported(decodeState(p.payload));
        break;
      default:
        throw new DrbdProtocolError(`unexpected ${commandName(p.header.command)} during the handshake`);
    }
  }
  if (link.device.disk === "Diskless" || peerDiskless()) return syncHandshake.onConnectDiskless(data);
  const sizes = link.device.layout.usableSectors;
  if (peerSizes !== sizes) link.log.warn({ mine: sizes, peer: peerSizes }, "the peer's disk size differs");
  return syncHandshake.onConnect(data, link.peerUuids as UuidSet, t);
}

/**
 * P_SIZES (drbd_send_sizes): the backing disk's usable size; a Diskless node has none (d_size and u_size
 * 0) and tells the size it exposes as c_size. Sent on connecting and by an attach while connected.
 */
export function sendSizes(link: Link, data = link.data): Promise<void> {
  const dev = link.device;
  const diskless = dev.disk === "Diskless";
  const sizes = diskless ? 0 : dev.layout.usableSectors;
  return link.send(
    data,
    DrbdCommand.Sizes,
    encodeSizes({
      diskSize: sizes,
      userSize: 0,
      currentSize: diskless ? dev.sizeSectors : sizes,
      maxBioSize: maxBioSizeFor(link.agreedVersion),
      queueOrderType: 0,
      ddsFlags: 0,
    }),
  );
}
