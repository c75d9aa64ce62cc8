/**
 * The device tree as a FUSE file system: `/` holds `dev/`, and `dev/<name>` is a regular file of the
 * device's size, mode 0600 (0400 for a read-only device). Status files the tree publishes (`proc/drbd`)
 * sit in their own directories beside `dev/`: mode 0444, size 0 as in procfs, the text rendered once per
 * open so that one reader sees one consistent snapshot. Every open file is served with direct I/O
 * (FOPEN_DIRECT_IO): reads and writes go straight to the device, so the FUSE view, iSCSI LUNs and BIO
 * bdevs see the same bytes at once with no stale page cache in between, and fsync() reaches the
 * device's flush (the FUSE view of the reference deployment ignored fsync).
 *
 * Opening a device for writing claims it for the mount ("write" claim, shared by all writers through
 * this mount); when a LUN, BIO bdev or DRBD device already holds it, the open fails with EBUSY.
 */
import type { BlockDevice } from "../bdev/bdev.js";
import {
  DeviceBusyError,
  type DeviceClaim,
  type DeviceNode,
  type DeviceTree,
  type StatusFile,
} from "../devtree/device_tree.js";
import type { Logger } from "../util/log.js";
import type { FuseRequest, FuseResult } from "./fuse_session.js";
import {
  DT_DIR,
  DT_REG,
  encodeAttrOut,
  encodeDirents,
  encodeEntryOut,
  encodeInitOut,
  encodeOpenOut,
  encodeStatfsOut,
  encodeWriteOut,
  Errno,
  FUSE_KERNEL_MINOR_VERSION,
  FUSE_KERNEL_VERSION,
  FUSE_ROOT_ID,
  InitFlag,
  Opcode,
  OpenFlag,
  parseInitIn,
  parseIoIn,
  WRITE_IN_SIZE,
  type Attr,
  type DirEntry,
} from "./protocol.js";

const DEV_DIR_ID = 2;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
/** Attribute and name cache lifetime: short, because devices come and go with the tree. */
const VALID_SECONDS = 1;
const O_ACCMODE = 3;
const O_RDONLY = 0;

interface OpenDevice {
  readonly node: DeviceNode;
  readonly write: boolean;
}

/** An open status file: the text as rendered at open. */
interface OpenStatus {
  readonly text: Buffer;
}

type OpenFile = OpenDevice | OpenStatus;

function isDevice(f: OpenFile): f is OpenDevice {
  return "node" in f;
}

/** One claim of a device by this mount, shared by all opens of the same mode. */
interface SharedClaim {
  claim: DeviceClaim;
  users: number;
}

export interface DevtreeFsOptions {
  /** Largest WRITE the kernel may send (negotiated in FUSE_INIT); a multiple of 4096. */
  readonly maxWrite: number;
  /** Who the claims name as holder, e.g. "FUSE mount /UMCfuse". */
  readonly owner: string;
}

export class DevtreeFs {
  private readonly byIno = new Map<number, DeviceNode>();
  private readonly inoByName = new Map<string, number>();
  private nextIno = 3;
  private readonly files = new Map<number, OpenFile>();
  /** Inode numbers of status directories ("proc") and files ("proc/drbd"), kept while the mount lives. */
  private readonly statusInos = new Map<string, number>();
  private readonly statusByIno = new Map<number, { dir: string; file?: StatusFile }>();
  private nextFh = 1;
  private readonly claims = new Map<string, { read?: SharedClaim; write?: SharedClaim }>();
  /** Unaligned writes read-modify-write whole blocks; one at a time per device. */
  private readonly rmwChains = new Map<BlockDevice, Promise<unknown>>();
  private readonly startTime = Date.now() / 1000;
  private readonly onAdd = (n: DeviceNode) => this.track(n);
  private readonly onRemove = (n: DeviceNode) => this.untrack(n);
  /** Set once FUSE_INIT is answered. */
  negotiated: { maxWrite: number; kernelMinor: number } | undefined;

  constructor(
    private readonly tree: DeviceTree,
    private readonly log: Logger,
    private readonly opts: DevtreeFsOptions,
  ) {
    for (const n of tree.list()) this.track(n);
    tree.on("add", this.onAdd);
    tree.on("remove", this.onRemove);
  }

  /** Stop following the tree and drop every claim this mount holds. */
  dispose(): void {
    this.tree.off("add", this.onAdd);
    this.tree.off("remove", this.onRemove);
    for (const c of this.claims.values()) {
      c.read?.claim.release();
      c.write?.claim.release();
    }
    this.claims.clear();
    this.files.clear();
  }

  /** Names of devices this mount has open for writing (for tests and diagnostics). */
  writersOpen(): string[] {
    return [...this.claims.entries()].filter(([, c]) => c.write).map(([n]) => n);
  }

  private track(n: DeviceNode): void {
    const ino = this.nextIno++;
    this.byIno.set(ino, n);
    this.inoByName.set(n.name, ino);
  }

  private untrack(n: DeviceNode): void {
    const ino = this.inoByName.get(n.name);
    if (ino === undefined) return;
    this.inoByName.delete(n.name);
    this.byIno.delete(ino);
  }

  private attrOf(ino: number): Attr | undefined {
    if (ino === FUSE_ROOT_ID || ino === DEV_DIR_ID) {
      return {
        ino,
        size: 0,
        mode: S_IFDIR | 0o755,
        nlink: ino === FUSE_ROOT_ID ? 3 : 2,
        time: this.startTime,
        blksize: 4096,
      };
    }
    const st = this.statusByIno.get(ino);
    if (st) {
      const dir = st.file === undefined;
      return {
        ino,
        size: 0,
        mode: dir ? S_IFDIR | 0o555 : S_IFREG | 0o444,
        nlink: dir ? 2 : 1,
        time: this.startTime,
        blksize: 4096,
      };
    }
    const n = this.byIno.get(ino);
    if (!n) return undefined;
    const d = n.device;
    return {
      ino,
      size: d.blockCount * d.blockSize,
      mode: S_IFREG | (n.readOnly ? 0o400 : 0o600),
      nlink: 1,
      time: this.startTime,
      blksize: Math.max(d.blockSize, 128 * 1024),
    };
  }

  /** Serve one request. Unknown requests get ENOSYS, so the kernel stops asking. */
  async handle(req: FuseRequest): Promise<FuseResult> {
    const h = req.header;
    switch (h.opcode) {
      case Opcode.INIT:
        return this.init(req.arg);
      case Opcode.LOOKUP:
        return this.lookup(h.nodeid, req.arg);
      case Opcode.FORGET:
      case Opcode.BATCH_FORGET:
      case Opcode.INTERRUPT:
        // No reply (FORGET) or optional (INTERRUPT): requests finish fast, nothing to cancel.
        return "none";
      case Opcode.GETATTR:
      case Opcode.SETATTR: {
        // SETATTR: sizes, modes and times of device nodes are fixed, as for a block device node;
        // an O_TRUNC open or chmod is accepted and changes nothing.
        const a = this.attrOf(h.nodeid);
        return a ? { data: encodeAttrOut(a, VALID_SECONDS) } : { errno: Errno.ENOENT };
      }
      case Opcode.OPENDIR:
        if (h.nodeid !== FUSE_ROOT_ID && h.nodeid !== DEV_DIR_ID && !this.isStatusDir(h.nodeid))
          return { errno: Errno.ENOTDIR };
        return { data: encodeOpenOut(0, 0) };
      case Opcode.READDIR:
        return this.readdir(h.nodeid, req.arg);
      case Opcode.FLUSH:
        // close() waits for FLUSH. Were this process ever to close a file of its own mount while
        // blocked (a fork+exec closes its O_CLOEXEC files before exec, and libuv's spawn waits for
        // the exec), that wait would never end. Our FLUSH does nothing (fsync is what flushes), so
        // opens say NOFLUSH, and ENOSYS here makes older kernels stop sending it too.
        return { errno: Errno.ENOSYS };
      case Opcode.RELEASEDIR:
      case Opcode.FSYNCDIR:
      case Opcode.DESTROY:
        return {};
      case Opcode.OPEN:
        return this.open(h.nodeid, req.arg.readUInt32LE(0));
      case Opcode.RELEASE:
        return this.release(Number(req.arg.readBigUInt64LE(0)));
      case Opcode.READ:
        return this.read(req);
      case Opcode.WRITE:
        return this.write(req);
      case Opcode.FSYNC:
        return this.fsync(Number(req.arg.readBigUInt64LE(0)));
      case Opcode.STATFS:
        return this.statfs();
      case Opcode.MKNOD:
      case Opcode.MKDIR:
      case Opcode.UNLINK:
      case Opcode.RMDIR:
      case Opcode.RENAME:
      case Opcode.RENAME2:
      case Opcode.LINK:
      case Opcode.SYMLINK:
      case Opcode.CREATE:
        return { errno: Errno.EPERM }; // the tree's names come from the configuration
      default:
        return { errno: Errno.ENOSYS };
    }
  }

  private init(arg: Buffer): FuseResult {
    const k = parseInitIn(arg);
    if (k.major !== FUSE_KERNEL_VERSION) {
      this.log.error({ major: k.major }, "FUSE protocol major version not supported");
      return { errno: Errno.EIO };
    }
    const minor = Math.min(k.minor, FUSE_KERNEL_MINOR_VERSION);
    // BIG_WRITES lets a write carry up to max_write at once (not 4 KiB pages), MAX_PAGES lifts the
    // 128 KiB request limit to max_pages; ASYNC_DIO sends the pieces of a large direct write in parallel.
    const wanted =
      InitFlag.ASYNC_READ |
      InitFlag.BIG_WRITES |
      InitFlag.ASYNC_DIO |
      InitFlag.PARALLEL_DIROPS |
      InitFlag.MAX_PAGES;
    const flags = k.flags & wanted;
    const maxWrite =
      flags & InitFlag.MAX_PAGES ? this.opts.maxWrite : Math.min(this.opts.maxWrite, 128 * 1024);
    this.negotiated = { maxWrite, kernelMinor: k.minor };
    this.log.info(
      { kernel: `${k.major}.${k.minor}`, minor, maxWrite, flags: flags.toString(16) },
      "FUSE_INIT",
    );
    return {
      data: encodeInitOut({
        minor,
        maxReadahead: Math.min(k.maxReadahead, maxWrite),
        flags,
        maxBackground: 64,
        congestionThreshold: 48,
        maxWrite,
        maxPages: Math.ceil(maxWrite / 4096),
      }),
    };
  }

  private lookup(parent: number, arg: Buffer): FuseResult {
    const end = arg.indexOf(0);
    const name = arg.toString("utf8", 0, end < 0 ? arg.length : end);
    let ino: number | undefined;
    if (parent === FUSE_ROOT_ID) {
      ino = name === "dev" ? DEV_DIR_ID : undefined;
      if (ino === undefined && this.tree.listStatusFiles().some((f) => f.dir === name))
        ino = this.statusIno(name);
    } else if (parent === DEV_DIR_ID) ino = this.inoByName.get(name);
    else if (this.isStatusDir(parent)) {
      const dir = this.statusByIno.get(parent)?.dir;
      const f = this.tree.listStatusFiles().find((x) => x.dir === dir && x.name === name);
      ino = f ? this.statusIno(`${f.dir}/${f.name}`, f) : undefined;
    } else return { errno: Errno.ENOTDIR };
    const a = ino === undefined ? undefined : this.attrOf(ino);
    return a ? { data: encodeEntryOut(a, VALID_SECONDS) } : { errno: Errno.ENOENT };
  }

  private readdir(ino: number, arg: Buffer): FuseResult {
    const { offset, size } = parseIoIn(arg);
    let entries: DirEntry[];
    if (ino === FUSE_ROOT_ID) {
      entries = [
        { ino, name: ".", type: DT_DIR },
        { ino, name: "..", type: DT_DIR },
        { ino: DEV_DIR_ID, name: "dev", type: DT_DIR },
      ];
      const dirs = new Set(this.tree.listStatusFiles().map((f) => f.dir));
      for (const d of [...dirs].sort()) entries.push({ ino: this.statusIno(d), name: d, type: DT_DIR });
    } else if (this.isStatusDir(ino)) {
      const dir = this.statusByIno.get(ino)?.dir;
      entries = [
        { ino, name: ".", type: DT_DIR },
        { ino: FUSE_ROOT_ID, name: "..", type: DT_DIR },
      ];
      for (const f of this.tree.listStatusFiles())
        if (f.dir === dir)
          entries.push({ ino: this.statusIno(`${f.dir}/${f.name}`, f), name: f.name, type: DT_REG });
    } else if (ino === DEV_DIR_ID) {
      entries = [
        { ino, name: ".", type: DT_DIR },
        { ino: FUSE_ROOT_ID, name: "..", type: DT_DIR },
      ];
      const names = [...this.inoByName.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      for (const [name, i] of names) entries.push({ ino: i, name, type: DT_REG });
    } else {
      return { errno: Errno.ENOTDIR };
    }
    return { data: encodeDirents(entries, offset, size) };
  }

  private open(ino: number, flags: number): FuseResult {
    const write = (flags & O_ACCMODE) !== O_RDONLY;
    const st = this.statusByIno.get(ino);
    if (st?.file) {
      if (write) return { errno: Errno.EACCES };
      // Direct I/O: every read comes here (never a cached page of an older rendering).
      const fh = this.nextFh++;
      this.files.set(fh, { text: Buffer.from(st.file.render(), "utf8") });
      return { data: encodeOpenOut(fh, OpenFlag.DIRECT_IO | OpenFlag.NOFLUSH) };
    }
    if (st) return { errno: Errno.EISDIR };
    const node = this.byIno.get(ino);
    if (!node)
      return ino === FUSE_ROOT_ID || ino === DEV_DIR_ID ? { errno: Errno.EISDIR } : { errno: Errno.ENOENT };
    if (write && node.readOnly) return { errno: Errno.EROFS };
    const mode = write ? "write" : "read";
    const held = this.claims.get(node.name) ?? {};
    let shared = held[mode];
    if (!shared) {
      try {
        shared = { claim: this.tree.claim(node.name, this.opts.owner, mode), users: 0 };
      } catch (err) {
        if (err instanceof DeviceBusyError) {
          this.log.info({ device: node.name, holder: err.holder }, "FUSE open refused: device busy");
          return { errno: Errno.EBUSY };
        }
        throw err;
      }
      held[mode] = shared;
      this.claims.set(node.name, held);
    }
    shared.users++;
    const fh = this.nextFh++;
    this.files.set(fh, { node, write });
    return {
      data: encodeOpenOut(fh, OpenFlag.DIRECT_IO | OpenFlag.PARALLEL_DIRECT_WRITES | OpenFlag.NOFLUSH),
    };
  }

  private release(fh: number): FuseResult {
    const f = this.files.get(fh);
    if (!f) return {};
    this.files.delete(fh);
    if (!isDevice(f)) return {};
    const held = this.claims.get(f.node.name);
    const mode = f.write ? "write" : "read";
    const shared = held?.[mode];
    if (held && shared && --shared.users === 0) {
      shared.claim.release();
      delete held[mode];
      if (!held.read && !held.write) this.claims.delete(f.node.name);
    }
    return {};
  }

  private async read(req: FuseRequest): Promise<FuseResult> {
    const { fh, offset, size } = parseIoIn(req.arg);
    const f = this.files.get(fh);
    if (!f) return { errno: Errno.EBADF };
    if (!isDevice(f)) {
      const n = Math.max(0, Math.min(size, f.text.length - offset, req.replySpace.length));
      if (n > 0) f.text.copy(req.replySpace, 0, offset, offset + n);
      return { slotBytes: n };
    }
    const dev = f.node.device;
    const devSize = dev.blockCount * dev.blockSize;
    if (offset >= devSize || size === 0) return { slotBytes: 0 };
    const n = Math.min(size, devSize - offset, req.replySpace.length);
    const bs = dev.blockSize;
    const out = req.replySpace.subarray(0, n);
    if (offset % bs === 0 && n % bs === 0) {
      await dev.readv(offset / bs, [out]);
    } else {
      const start = offset - (offset % bs);
      const end = Math.ceil((offset + n) / bs) * bs;
      const tmp = Buffer.allocUnsafe(end - start);
      await dev.readv(start / bs, [tmp]);
      tmp.copy(out, 0, offset - start, offset - start + n);
    }
    return { slotBytes: n };
  }

  private async write(req: FuseRequest): Promise<FuseResult> {
    const { fh, offset, size } = parseIoIn(req.arg);
    const f = this.files.get(fh);
    if (!f) return { errno: Errno.EBADF };
    if (!isDevice(f) || !f.write) return { errno: Errno.EBADF };
    const dev = f.node.device;
    const devSize = dev.blockCount * dev.blockSize;
    if (offset >= devSize) return { errno: Errno.ENOSPC };
    const n = Math.min(size, devSize - offset);
    const data = req.arg.subarray(WRITE_IN_SIZE, WRITE_IN_SIZE + n);
    if (data.length < n) return { errno: Errno.EINVAL };
    const bs = dev.blockSize;
    if (offset % bs === 0 && n % bs === 0) {
      await dev.writev(offset / bs, [data]);
    } else {
      await this.readModifyWrite(dev, offset, data);
    }
    return { data: encodeWriteOut(n) };
  }

  private readModifyWrite(dev: BlockDevice, offset: number, data: Buffer): Promise<void> {
    const bs = dev.blockSize;
    const run = async () => {
      const start = offset - (offset % bs);
      const end = Math.ceil((offset + data.length) / bs) * bs;
      const tmp = Buffer.allocUnsafe(end - start);
      await dev.readv(start / bs, [tmp]);
      data.copy(tmp, offset - start);
      await dev.writev(start / bs, [tmp]);
    };
    const prev = this.rmwChains.get(dev) ?? Promise.resolve();
    const next = prev.then(run, run);
    const tail = next.catch(() => undefined);
    this.rmwChains.set(dev, tail);
    void tail.then(() => {
      if (this.rmwChains.get(dev) === tail) this.rmwChains.delete(dev);
    });
    return next;
  }

  private async fsync(fh: number): Promise<FuseResult> {
    const f = this.files.get(fh);
    if (!f) return { errno: Errno.EBADF };
    if (isDevice(f)) await f.node.device.flush();
    return {};
  }

  private isStatusDir(ino: number): boolean {
    const st = this.statusByIno.get(ino);
    return st !== undefined && st.file === undefined;
  }

  /** The inode of a status directory ("proc") or file ("proc/drbd"); the file's renderer may change. */
  private statusIno(key: string, file?: StatusFile): number {
    let ino = this.statusInos.get(key);
    if (ino === undefined) {
      ino = this.nextIno++;
      this.statusInos.set(key, ino);
    }
    this.statusByIno.set(ino, file ? { dir: file.dir, file } : { dir: key });
    return ino;
  }

  private statfs(): FuseResult {
    let bytes = 0;
    for (const n of this.byIno.values()) bytes += n.device.blockCount * n.device.blockSize;
    return { data: encodeStatfsOut(Math.ceil(bytes / 4096), 4096, this.byIno.size + 2) };
  }
}
