/**
 * Application reads served by the peer (drbd_req.c: a read the local disk cannot serve goes to the peer as
 * P_DATA_REQUEST; drbd_receiver.c receive_DataRequest answers it with P_DATA_REPLY, or P_NEG_DREPLY when it
 * cannot read; receive_DataReply / got_NegDReply complete it). A node reads from its peer when its own disk
 * is Diskless (detached after an I/O error), Inconsistent, or failed the read just now (on-io-error).
 *
 * Both sides: `read` asks, `receiveRequest` answers. The peer serves such reads only from an UpToDate disk,
 * as the kernel's receive_DataRequest does (get_ldev_if_state(D_UP_TO_DATE)), and at most 1 MiB each
 * (DRBD_MAX_BIO_SIZE); larger reads are split.
 */
import {
  decodeBlockAck,
  decodeData,
  DrbdCommand,
  DrbdProtocolError,
  encodeBlockRequest,
  encodeData,
} from "./protocol.js";
import { SECTOR } from "./metadata.js";
import type { Link } from "./link.js";
import type { PeerLink } from "./peer_device_port.js";
import { BlockDeviceError } from "../bdev/bdev.js";
import type { IoSuspensionGate } from "./io_suspension.js";
import type { Deallocation } from "./peer_device_port.js";

/** A Diskless Primary's write (drbd_req.c): only the peer gets it; without an UpToDate peer it fails. */
export async function writeViaPeer(
  link: PeerLink | undefined,
  dev: { readonly name: string; readonly io: { netSentBytes: number } },
  suspension: IoSuspensionGate,
  offset: number,
  bytes: number,
  data: readonly Buffer[] | Deallocation,
  fua: boolean,
): Promise<void> {
  if (suspension.why) await suspension.wait();
  const peer = link?.replicating ? link : undefined;
  if (!peer || !peer.peerReadable)
    throw new BlockDeviceError(`${dev.name}: no local disk and no UpToDate peer to write to`, "io");
  const mirrored = await peer.mirror(offset, bytes, data, fua).catch(() => false);
  if (!mirrored) {
    if (suspension.why) await suspension.wait();
    throw new BlockDeviceError(`${dev.name}: no local disk and the peer did not take the write`, "io");
  }
  if (typeof data !== "string") dev.io.netSentBytes += bytes;
}

/** A device's read of `iov` at byte `offset` served by the peer; a failure is an I/O error of `device`. */
export async function readIovFromPeer(
  peer: PeerLink,
  device: string,
  offset: number,
  iov: readonly Buffer[],
): Promise<void> {
  const reads: Promise<void>[] = [];
  for (const b of iov) {
    reads.push(peer.readRemote(offset, b));
    offset += b.length;
  }
  try {
    await Promise.all(reads);
  } catch (e) {
    throw new BlockDeviceError(`${device}: read from the peer failed: ${(e as Error).message}`, "io");
  }
}

/** DRBD_MAX_BIO_SIZE: the largest P_DATA_REQUEST the kernel sends or accepts. */
const MAX_READ = 1 << 20;

interface PendingRead {
  sector: number;
  into: Buffer;
  resolve: () => void;
  reject: (e: Error) => void;
}

export class RemoteReads {
  private readonly pending = new Map<bigint, PendingRead>();
  /** block_id of the next request: opaque to the peer, echoed back. */
  private nextId = 1n;
  /** Reads served to the peer / asked of it (for status and tests). */
  readonly stats = { served: 0, refused: 0, asked: 0 };

  constructor(private readonly link: Link) {}

  /** Reads `into.length` bytes at byte `offset` from the peer's disk. */
  async read(offset: number, into: Buffer): Promise<void> {
    const parts: Promise<void>[] = [];
    for (let o = 0; o < into.length; o += MAX_READ)
      parts.push(this.readOne(offset + o, into.subarray(o, Math.min(into.length, o + MAX_READ))));
    await Promise.all(parts);
  }

  private readOne(offset: number, into: Buffer): Promise<void> {
    const link = this.link;
    const blockId = this.nextId++;
    const sector = offset / SECTOR;
    this.stats.asked++;
    return new Promise<void>((resolve, reject) => {
      this.pending.set(blockId, { sector, into, resolve, reject });
      link
        .send(link.data, DrbdCommand.DataRequest, encodeBlockRequest({ sector, blockId, size: into.length }))
        .catch((e: Error) => {
          if (this.pending.delete(blockId)) reject(e);
        });
    });
  }

  /** receive_DataReply: the data of one of our requests. */
  receiveReply(payload: Buffer): void {
    const d = decodeData(payload);
    const p = this.pending.get(d.blockId);
    if (!p) throw new DrbdProtocolError(`P_DATA_REPLY for a request not asked (block_id ${d.blockId})`);
    if (d.sector !== p.sector || d.data.length !== p.into.length)
      throw new DrbdProtocolError(
        `P_DATA_REPLY for sector ${d.sector}, ${d.data.length} bytes; asked sector ${p.sector}, ${p.into.length} bytes`,
      );
    this.pending.delete(d.blockId);
    d.data.copy(p.into);
    p.resolve();
  }

  /** got_NegDReply: the peer could not read it. */
  receiveNegReply(payload: Buffer): void {
    const a = decodeBlockAck(payload);
    const p = this.pending.get(a.blockId);
    if (!p) return;
    this.pending.delete(a.blockId);
    p.reject(new Error(`the peer could not read sector ${a.sector} (P_NEG_DREPLY)`));
  }

  /** receive_DataRequest (P_DATA_REQUEST): read the block for the peer, or refuse it with P_NEG_DREPLY. */
  receiveRequest(payload: Buffer): void {
    const link = this.link;
    const r = link.checkedRequest(payload, "P_DATA_REQUEST", link.state.isUp, MAX_READ);
    const dev = link.device;
    const refuse = (why: string) => {
      this.stats.refused++;
      link.log.warn({ sector: r.sector, size: r.size, why }, "cannot serve the peer's read: P_NEG_DREPLY");
      link.answerRequest(DrbdCommand.NegDReply, r).catch(() => {});
    };
    if (dev.disk !== "UpToDate") return refuse(`disk is ${dev.disk}`);
    dev
      .readForPeer(r.sector * SECTOR, r.size)
      .then((block) => {
        this.stats.served++;
        return link.send(
          link.data,
          DrbdCommand.DataReply,
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
      .catch((e: Error) => refuse(e.message));
  }

  /** The connection is gone: reads waiting for the peer fail (the device may retry them locally or report). */
  failPending(e: Error): void {
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) p.reject(e);
  }
}
