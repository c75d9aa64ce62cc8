/**
 * The /dev/fuse wire format (Linux include/uapi/linux/fuse.h, protocol 7.x): request and reply
 * headers, the opcodes this server answers, and encoders for the reply structures. Everything is
 * little-endian host order, 64-bit aligned. One place defines the layouts; fuse_session.ts and
 * devtree_fs.ts only call these helpers.
 */

export const FUSE_KERNEL_VERSION = 7;
/** The newest minor whose structure layouts this file follows. */
export const FUSE_KERNEL_MINOR_VERSION = 38;
export const FUSE_ROOT_ID = 1;

export const enum Opcode {
  LOOKUP = 1,
  FORGET = 2,
  GETATTR = 3,
  SETATTR = 4,
  READLINK = 5,
  SYMLINK = 6,
  MKNOD = 8,
  MKDIR = 9,
  UNLINK = 10,
  RMDIR = 11,
  RENAME = 12,
  LINK = 13,
  OPEN = 14,
  READ = 15,
  WRITE = 16,
  STATFS = 17,
  RELEASE = 18,
  FSYNC = 20,
  SETXATTR = 21,
  GETXATTR = 22,
  LISTXATTR = 23,
  REMOVEXATTR = 24,
  FLUSH = 25,
  INIT = 26,
  OPENDIR = 27,
  READDIR = 28,
  RELEASEDIR = 29,
  FSYNCDIR = 30,
  ACCESS = 34,
  CREATE = 35,
  INTERRUPT = 36,
  DESTROY = 38,
  BATCH_FORGET = 42,
  FALLOCATE = 43,
  RENAME2 = 45,
}

/** fuse_init_in/out flags (the first 32 bits). */
export const InitFlag = {
  ASYNC_READ: 1 << 0,
  BIG_WRITES: 1 << 5,
  ASYNC_DIO: 1 << 15,
  PARALLEL_DIROPS: 1 << 18,
  MAX_PAGES: 1 << 22,
} as const;

/** fuse_open_out.open_flags */
export const OpenFlag = {
  DIRECT_IO: 1 << 0,
  KEEP_CACHE: 1 << 1,
  NOFLUSH: 1 << 5,
  PARALLEL_DIRECT_WRITES: 1 << 6,
} as const;

export const FATTR_SIZE = 1 << 3;

/** sizeof(struct fuse_in_header) and friends. */
export const IN_HEADER_SIZE = 40;
export const OUT_HEADER_SIZE = 16;
export const WRITE_IN_SIZE = 40;
const ATTR_SIZE = 88;
export const ENTRY_OUT_SIZE = 40 + ATTR_SIZE;
export const ATTR_OUT_SIZE = 16 + ATTR_SIZE;
const DIRENT_HEADER = 24;

export interface InHeader {
  readonly len: number;
  readonly opcode: number;
  readonly unique: bigint;
  readonly nodeid: number;
  readonly uid: number;
  readonly gid: number;
  readonly pid: number;
}

/** Parse struct fuse_in_header; node ids are small here, so a Number is exact. */
export function parseInHeader(b: Buffer): InHeader {
  return {
    len: b.readUInt32LE(0),
    opcode: b.readUInt32LE(4),
    unique: b.readBigUInt64LE(8),
    nodeid: Number(b.readBigUInt64LE(16)),
    uid: b.readUInt32LE(24),
    gid: b.readUInt32LE(28),
    pid: b.readUInt32LE(32),
  };
}

/** Write struct fuse_out_header at the start of `b`: total length, -errno (0 for success), unique. */
export function writeOutHeader(b: Buffer, len: number, error: number, unique: bigint): void {
  b.writeUInt32LE(len, 0);
  b.writeInt32LE(error, 4);
  b.writeBigUInt64LE(unique, 8);
}

/** The attributes this server reports (struct fuse_attr). */
export interface Attr {
  readonly ino: number;
  readonly size: number;
  readonly mode: number;
  readonly nlink: number;
  /** Seconds since the epoch, for atime/mtime/ctime alike. */
  readonly time: number;
  /** st_blksize: the preferred I/O size. */
  readonly blksize: number;
}

function writeAttr(b: Buffer, off: number, a: Attr): void {
  b.writeBigUInt64LE(BigInt(a.ino), off);
  b.writeBigUInt64LE(BigInt(a.size), off + 8);
  b.writeBigUInt64LE(BigInt(Math.ceil(a.size / 512)), off + 16);
  const t = BigInt(Math.floor(a.time));
  b.writeBigUInt64LE(t, off + 24);
  b.writeBigUInt64LE(t, off + 32);
  b.writeBigUInt64LE(t, off + 40);
  b.fill(0, off + 48, off + 60); // nanoseconds
  b.writeUInt32LE(a.mode, off + 60);
  b.writeUInt32LE(a.nlink, off + 64);
  b.fill(0, off + 68, off + 80); // uid, gid, rdev: root-owned, not a device node
  b.writeUInt32LE(a.blksize, off + 80);
  b.writeUInt32LE(0, off + 84);
}

/** struct fuse_entry_out (LOOKUP reply). */
export function encodeEntryOut(a: Attr, validSeconds: number): Buffer {
  const b = Buffer.alloc(ENTRY_OUT_SIZE);
  b.writeBigUInt64LE(BigInt(a.ino), 0);
  b.writeBigUInt64LE(0n, 8); // generation: inode numbers are never reused within a mount
  b.writeBigUInt64LE(BigInt(validSeconds), 16);
  b.writeBigUInt64LE(BigInt(validSeconds), 24);
  writeAttr(b, 40, a);
  return b;
}

/** struct fuse_attr_out (GETATTR/SETATTR reply). */
export function encodeAttrOut(a: Attr, validSeconds: number): Buffer {
  const b = Buffer.alloc(ATTR_OUT_SIZE);
  b.writeBigUInt64LE(BigInt(validSeconds), 0);
  writeAttr(b, 16, a);
  return b;
}

/** struct fuse_open_out */
export function encodeOpenOut(fh: number, openFlags: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeBigUInt64LE(BigInt(fh), 0);
  b.writeUInt32LE(openFlags, 8);
  return b;
}

/** struct fuse_write_out */
export function encodeWriteOut(size: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(size, 0);
  return b;
}

/** struct fuse_statfs_out */
export function encodeStatfsOut(blocks: number, bsize: number, files: number): Buffer {
  const b = Buffer.alloc(80);
  b.writeBigUInt64LE(BigInt(blocks), 0);
  b.writeBigUInt64LE(BigInt(files), 24);
  b.writeUInt32LE(bsize, 40);
  b.writeUInt32LE(255, 44); // namelen
  b.writeUInt32LE(bsize, 48); // frsize
  return b;
}

export interface InitIn {
  readonly major: number;
  readonly minor: number;
  readonly maxReadahead: number;
  readonly flags: number;
}

export function parseInitIn(b: Buffer): InitIn {
  return {
    major: b.readUInt32LE(0),
    minor: b.readUInt32LE(4),
    maxReadahead: b.readUInt32LE(8),
    flags: b.readUInt32LE(12),
  };
}

export interface InitOut {
  readonly minor: number;
  readonly maxReadahead: number;
  readonly flags: number;
  readonly maxBackground: number;
  readonly congestionThreshold: number;
  readonly maxWrite: number;
  readonly maxPages: number;
}

/** struct fuse_init_out (64 bytes for minor >= 23). */
export function encodeInitOut(o: InitOut): Buffer {
  const b = Buffer.alloc(64);
  b.writeUInt32LE(FUSE_KERNEL_VERSION, 0);
  b.writeUInt32LE(o.minor, 4);
  b.writeUInt32LE(o.maxReadahead, 8);
  b.writeUInt32LE(o.flags >>> 0, 12);
  b.writeUInt16LE(o.maxBackground, 16);
  b.writeUInt16LE(o.congestionThreshold, 18);
  b.writeUInt32LE(o.maxWrite, 20);
  b.writeUInt32LE(1, 24); // time_gran: 1 ns
  b.writeUInt16LE(o.maxPages, 28);
  return b;
}

/** struct fuse_read_in / fuse_write_in share their first fields: fh, offset, size. */
export interface IoIn {
  readonly fh: number;
  readonly offset: number;
  readonly size: number;
}

export function parseIoIn(b: Buffer): IoIn {
  return { fh: Number(b.readBigUInt64LE(0)), offset: Number(b.readBigUInt64LE(8)), size: b.readUInt32LE(16) };
}

/** Directory entry types (DT_DIR, DT_REG) as in <dirent.h>. */
export const DT_DIR = 4;
export const DT_REG = 8;

export interface DirEntry {
  readonly ino: number;
  readonly name: string;
  readonly type: number;
}

/**
 * Pack struct fuse_dirent records starting at entry index `from` until `maxBytes` would be exceeded.
 * Each record's `off` is the index of the entry after it, which the kernel hands back as the next offset.
 */
export function encodeDirents(entries: readonly DirEntry[], from: number, maxBytes: number): Buffer {
  const parts: Buffer[] = [];
  let total = 0;
  for (let i = from; i < entries.length; i++) {
    const name = Buffer.from(entries[i].name);
    const recLen = (DIRENT_HEADER + name.length + 7) & ~7;
    if (total + recLen > maxBytes) break;
    const r = Buffer.alloc(recLen);
    r.writeBigUInt64LE(BigInt(entries[i].ino), 0);
    r.writeBigUInt64LE(BigInt(i + 1), 8);
    r.writeUInt32LE(name.length, 16);
    r.writeUInt32LE(entries[i].type, 20);
    name.copy(r, DIRENT_HEADER);
    parts.push(r);
    total += recLen;
  }
  return Buffer.concat(parts, total);
}

/** Linux errno values replied as negatives. */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EIO: 5,
  EBADF: 9,
  EACCES: 13,
  EBUSY: 16,
  EEXIST: 17,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  EFBIG: 27,
  ENOSPC: 28,
  EROFS: 30,
  ENOSYS: 38,
  ENODATA: 61,
} as const;
