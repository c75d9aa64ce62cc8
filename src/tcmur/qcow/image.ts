/**
 * A qcow2 image (QEMU docs/interop/qcow2.txt): guest offsets map through the L1 table and L2
 * tables to host clusters; unallocated clusters read from the backing file (or as zeroes).
 *
 * Crash consistency without a dirty bit or lazy refcounts: a new cluster's contents (guest data
 * plus copy-on-write fill) and its refcount are written, then synced, and only then does an L2 (or
 * L1) entry point at it. A discard clears the L2 entry, syncs, and only then drops the refcount. So
 * after a kill -9 or power loss at any moment `qemu-img check` finds at worst leaked clusters.
 * The sync is shared by all allocations in flight (SyncedFile.sync), so a random-write burst on a
 * fresh image costs one fdatasync per batch, not per write.
 */
import { open, type FileHandle } from "node:fs/promises";
import { constants } from "node:fs";
import { promisify } from "node:util";
import { inflateRaw } from "node:zlib";
import { dirname, isAbsolute, resolve } from "node:path";
import { HeaderField, parseHeader, QCOW_MAGIC, writeOffset, type QcowHeader } from "./header.js";
import { Refcounts } from "./refcounts.js";
import { SyncedFile, sliceIov } from "./synced_file.js";
import { log } from "../../util/log.js";

/** L1/L2 entry flag bits in the high word (qcow2.txt, "Cluster mapping"). */
const COPIED_HI = 0x80000000; // refcount is exactly 1: may be written in place
const COMPRESSED_HI = 0x40000000;
const OFFSET_HI_MASK = 0x00ffffff; // bits 32-55 of the offset
const OFFSET_LO_MASK = 0xfffffe00; // bits 9-31
const ZERO_LO = 1; // version 3: the cluster reads as zeroes
const MAX_BACKING_DEPTH = 16;
const ZERO = Buffer.alloc(2 * 1024 * 1024);
/** Compressed clusters are stored in 512-byte sectors (qcow2.txt, "Compressed Clusters Descriptor"). */
const COMPRESSED_SECTOR = 512;
const inflateRawAsync = promisify(inflateRaw);

/** What one guest cluster maps to. */
const enum Kind {
  /** Not allocated here: the backing file's data, or zeroes. */
  Unallocated,
  /** Reads as zeroes (v3 zero flag); `host` may still hold a preallocated cluster. */
  Zero,
  Data,
  Compressed,
}

interface Mapping {
  kind: Kind;
  /** Host offset of the cluster (0 when none). */
  host: number;
  /** The COPIED flag: refcount 1, writable in place. */
  copied: boolean;
  /** Compressed: bytes of deflate data at `host` (which need not be cluster aligned). */
  compressedBytes?: number;
}

/** What serves the guest ranges an image does not allocate itself. */
export interface BackingImage {
  readonly sizeBytes: number;
  readv(iov: readonly Buffer[], offset: number): Promise<void>;
  close(): Promise<void>;
}

export interface QcowOpenOptions {
  readonly readOnly: boolean;
  /** Prefix for errors, e.g. the TCMUR device and cfgstring. */
  readonly where?: string;
  readonly depth?: number;
}

export class QcowImage implements BackingImage {
  readonly sizeBytes: number;
  readonly clusterSize: number;
  private readonly l2Entries: number;
  private readonly l1: Buffer;
  /** L2 tables by L1 index, loaded on first use (one copy each: the promise is shared). */
  private readonly l2Tables = new Map<number, Promise<Buffer>>();
  /** Guest clusters whose allocation or discard is in progress. */
  private readonly busy = new Map<number, Promise<void>>();
  /** Serialises cluster allocation and table creation. */
  private metaTail: Promise<unknown> = Promise.resolve();
  /** The last compressed cluster inflated (by host offset): sequential small reads inflate it once. */
  private inflated: { host: number; data: Promise<Buffer> } | undefined;
  private closed = false;

  private constructor(
    private readonly file: SyncedFile,
    readonly header: QcowHeader,
    private readonly refcounts: Refcounts | undefined,
    private readonly backing: BackingImage | undefined,
    readonly readOnly: boolean,
    l1: Buffer,
  ) {
    this.sizeBytes = header.virtualSize;
    this.clusterSize = header.clusterSize;
    this.l2Entries = header.clusterSize / 8;
    this.l1 = l1;
  }

  static async open(path: string, opts: QcowOpenOptions): Promise<QcowImage> {
    const where = opts.where ? `${opts.where}: ${path}` : path;
    const depth = opts.depth ?? 0;
    const fh = await open(path, opts.readOnly ? constants.O_RDONLY : constants.O_RDWR).catch((err: Error) => {
      throw new Error(`${where}: cannot open: ${err.message}`, { cause: err });
    });
    let backing: BackingImage | undefined;
    try {
      const first = Buffer.alloc(64 * 1024);
      const { bytesRead } = await fh.read(first, 0, first.length, 0);
      const header = parseHeader(first.subarray(0, bytesRead), where);
      const file = new SyncedFile(fh, where);
      if (!opts.readOnly && header.snapshotCount > 0) {
        throw new Error(
          `${where}: the image has ${header.snapshotCount} internal snapshot(s); it can be served read-only (ro=1)`,
        );
      }
      if (header.l1Size * 8 > 32 * 1024 * 1024) throw new Error(`${where}: L1 table larger than 32 MiB`);
      const l1 = Buffer.alloc(header.l1Size * 8);
      await file.readFully([l1], header.l1TableOffset);
      const refcounts = opts.readOnly ? undefined : await Refcounts.load(file, header);
      if (header.backingFile !== undefined) {
        if (depth >= MAX_BACKING_DEPTH)
          throw new Error(`${where}: backing chain deeper than ${MAX_BACKING_DEPTH}`);
        const name = header.backingFile;
        const backingPath = isAbsolute(name) ? name : resolve(dirname(path), name);
        backing = await openBacking(backingPath, header.backingFormat, where, depth + 1);
      }
      if (!opts.readOnly && header.version === 3 && header.autoclearFeatures !== 0) {
        // qcow2.txt: a writer must clear auto-clear bits it does not maintain (bitmaps) first.
        const zero = Buffer.alloc(8);
        await file.writeFully([zero], HeaderField.autoclearFeatures);
        await file.sync();
      }
      const image = new QcowImage(file, header, refcounts, backing, opts.readOnly, l1);
      if (!opts.readOnly && !header.hasBitmaps) {
        const leaked = await image.repairLeaks();
        if (leaked > 0) log.warn({ module: "tcmur-qcow", image: where, leaked }, "freed leaked clusters");
      }
      return image;
    } catch (err) {
      await backing?.close();
      await fh.close();
      throw err;
    }
  }

  /**
   * Free clusters whose refcount is set but which nothing references: what a crash between a
   * refcount update and the L2 entry that would use it leaves ("leaked clusters" in qemu-img check;
   * the same repair as qemu-img check -r leaks). Reads every L2 table once (1/8192 of the virtual
   * size with 64 KiB clusters); skipped for images with bitmaps, whose clusters it cannot see.
   */
  private async repairLeaks(): Promise<number> {
    const rc = this.refcounts!;
    const cs = this.clusterSize;
    const { size } = await this.file.fh.stat();
    const referenced = new Uint8Array(Math.ceil(size / cs / 8) + 1);
    const limit = referenced.length * 8;
    const mark = (offset: number, bytes: number): void => {
      for (let c = Math.floor(offset / cs); c < Math.ceil((offset + bytes) / cs) && c < limit; c++) {
        referenced[c >> 3] |= 1 << (c & 7);
      }
    };
    mark(0, cs);
    mark(this.header.l1TableOffset, this.header.l1Size * 8);
    mark(rc.tableOffset, rc.tableClusters * cs);
    for (const off of rc.blockOffsets()) mark(off, cs);
    for (let i = 0; i < this.header.l1Size; i++) {
      const tableOffset = this.lookupL1(i);
      if (tableOffset === 0) continue;
      mark(tableOffset, cs);
      const table = await this.l2Table(i, tableOffset);
      for (let e = 0; e < this.l2Entries; e++) {
        const hi = table.readUInt32BE(e * 8);
        if (hi & COMPRESSED_HI) {
          const m = this.compressedMapping(hi, table.readUInt32BE(e * 8 + 4));
          for (const c of this.compressedClusters(m)) mark(c * cs, 1);
          continue;
        }
        const host = (hi & OFFSET_HI_MASK) * 0x1_0000_0000 + (table.readUInt32BE(e * 8 + 4) & OFFSET_LO_MASK);
        if (host !== 0) mark(host, cs);
      }
    }
    let freed = 0;
    for (const c of rc.inUse()) {
      if (c < limit && referenced[c >> 3] & (1 << (c & 7))) continue;
      await rc.drop(c);
      freed++;
    }
    if (freed > 0) await this.file.sync();
    return freed;
  }

  private lookupL1(l1Index: number): number {
    const hi = this.l1.readUInt32BE(l1Index * 8) & OFFSET_HI_MASK;
    const lo = this.l1.readUInt32BE(l1Index * 8 + 4) & OFFSET_LO_MASK;
    return hi * 0x1_0000_0000 + lo;
  }

  private l2Table(l1Index: number, tableOffset: number): Promise<Buffer> {
    let p = this.l2Tables.get(l1Index);
    if (!p) {
      p = (async () => {
        if (tableOffset % this.clusterSize !== 0) {
          throw new Error(`${this.file.label}: L2 table ${l1Index} at ${tableOffset} is not cluster aligned`);
        }
        const t = Buffer.alloc(this.clusterSize);
        await this.file.readFully([t], tableOffset);
        return t;
      })();
      p.catch(() => this.l2Tables.delete(l1Index));
      this.l2Tables.set(l1Index, p);
    }
    return p;
  }

  private async lookup(cluster: number): Promise<Mapping> {
    const l1Index = Math.floor(cluster / this.l2Entries);
    const tableOffset = this.lookupL1(l1Index);
    if (tableOffset === 0) return { kind: Kind.Unallocated, host: 0, copied: false };
    const table = await this.l2Table(l1Index, tableOffset);
    const i = (cluster % this.l2Entries) * 8;
    const hi = table.readUInt32BE(i);
    const lo = table.readUInt32BE(i + 4);
    if (hi & COMPRESSED_HI) return this.compressedMapping(hi, lo);
    const host = (hi & OFFSET_HI_MASK) * 0x1_0000_0000 + (lo & OFFSET_LO_MASK);
    const copied = (hi & COPIED_HI) !== 0;
    if (this.header.version === 3 && lo & ZERO_LO) return { kind: Kind.Zero, host, copied };
    if (host === 0) return { kind: Kind.Unallocated, host: 0, copied: false };
    return { kind: Kind.Data, host, copied };
  }

  /**
   * A compressed cluster descriptor (qcow2.txt, "Compressed Clusters Descriptor"): with
   * x = 62 - (cluster_bits - 8), bits 0..x-1 are the host offset of the deflate data and bits x..61
   * the number of 512-byte sectors it spans beyond the first; the data ends with that sector.
   */
  private compressedMapping(hi: number, lo: number): Mapping {
    const x = BigInt(62 - (this.header.clusterBits - 8));
    const entry = (BigInt(hi & 0x3fffffff) << 32n) | BigInt(lo >>> 0);
    const host = Number(entry & ((1n << x) - 1n));
    const sectors = Number(entry >> x) + 1;
    return {
      kind: Kind.Compressed,
      host,
      copied: false,
      compressedBytes: sectors * COMPRESSED_SECTOR - (host % COMPRESSED_SECTOR),
    };
  }

  /** Host cluster indexes a compressed cluster's sectors lie in (each holds a reference for it). */
  private compressedClusters(m: Mapping): number[] {
    const from = m.host - (m.host % COMPRESSED_SECTOR);
    const to = m.host + m.compressedBytes!;
    const out: number[] = [];
    for (let c = Math.floor(from / this.clusterSize); c * this.clusterSize < to; c++) out.push(c);
    return out;
  }

  /** The guest cluster a compressed mapping holds, inflated (QEMU writes raw deflate, zlib's windowBits -12). */
  private inflate(m: Mapping, cluster: number): Promise<Buffer> {
    if (this.inflated?.host === m.host) return this.inflated.data;
    const data = (async () => {
      const packed = Buffer.allocUnsafe(m.compressedBytes!);
      await this.file.readFully([packed], m.host);
      let out: Buffer;
      try {
        out = await inflateRawAsync(packed, { maxOutputLength: this.clusterSize });
      } catch (err) {
        throw new Error(
          `${this.file.label}: compressed guest cluster ${cluster} at host ${m.host}: ${(err as Error).message}`,
          { cause: err },
        );
      }
      if (out.length !== this.clusterSize) {
        throw new Error(
          `${this.file.label}: compressed guest cluster ${cluster} at host ${m.host} inflates to ${out.length} bytes, not ${this.clusterSize}`,
        );
      }
      return out;
    })();
    const entry = { host: m.host, data };
    this.inflated = entry;
    data.catch(() => {
      if (this.inflated === entry) this.inflated = undefined;
    });
    return data;
  }

  /** Drop the references a compressed cluster holds (its L2 entry no longer points at it, durably). */
  private async freeCompressed(m: Mapping): Promise<void> {
    if (this.inflated?.host === m.host) this.inflated = undefined;
    const refcounts = this.refcounts!;
    await this.underMetaLock(async () => {
      for (const c of this.compressedClusters(m)) await refcounts.free(c * this.clusterSize);
    });
  }

  /** Fill `iov` (the guest bytes at `offset`) from the backing image, zeroes past its end. */
  private async readBacking(iov: readonly Buffer[], offset: number, length: number): Promise<void> {
    const fromBacking = this.backing ? Math.max(0, Math.min(length, this.backing.sizeBytes - offset)) : 0;
    if (fromBacking > 0) await this.backing!.readv(sliceIov(iov, 0, fromBacking), offset);
    for (const b of sliceIov(iov, fromBacking, length - fromBacking)) b.fill(0);
  }

  async readv(iov: readonly Buffer[], offset: number): Promise<void> {
    this.checkOpen();
    await this.perCluster(iov, offset, (piece, cluster, inCluster, guest, n) =>
      this.readPiece(piece, cluster, inCluster, guest, n),
    );
  }

  /**
   * Split a guest request at cluster boundaries and run `fn` on each piece at once (pieces of one
   * request touch different clusters, so they need no ordering among themselves).
   */
  private async perCluster(
    iov: readonly Buffer[],
    offset: number,
    fn: (piece: Buffer[], cluster: number, inCluster: number, guest: number, n: number) => Promise<void>,
  ): Promise<void> {
    const pieces: Promise<void>[] = [];
    let total = 0;
    for (const b of iov) total += b.length;
    for (let pos = 0; pos < total;) {
      const guest = offset + pos;
      const cluster = Math.floor(guest / this.clusterSize);
      const inCluster = guest % this.clusterSize;
      const n = Math.min(this.clusterSize - inCluster, total - pos);
      pieces.push(fn(sliceIov(iov, pos, n), cluster, inCluster, guest, n));
      pos += n;
    }
    await Promise.all(pieces);
  }

  private async readPiece(
    iov: Buffer[],
    cluster: number,
    inCluster: number,
    guest: number,
    n: number,
  ): Promise<void> {
    const m = await this.lookup(cluster);
    switch (m.kind) {
      case Kind.Data:
        return this.file.readFully(iov, m.host + inCluster);
      case Kind.Zero:
        for (const b of iov) b.fill(0);
        return;
      case Kind.Unallocated:
        return this.readBacking(iov, guest, n);
      case Kind.Compressed: {
        const data = await this.inflate(m, cluster);
        let at = inCluster;
        for (const b of iov) at += data.copy(b, 0, at);
        return;
      }
    }
  }

  async writev(iov: readonly Buffer[], offset: number): Promise<void> {
    this.checkWritable();
    await this.perCluster(iov, offset, (piece, cluster, inCluster) =>
      this.writePiece(piece, cluster, inCluster),
    );
  }

  private async writePiece(iov: Buffer[], cluster: number, inCluster: number): Promise<void> {
    const m = this.busy.has(cluster) ? undefined : await this.lookup(cluster);
    if (m?.kind === Kind.Data && m.copied) return this.file.writeFully(iov, m.host + inCluster);
    await this.exclusively(cluster, async () => {
      // Looked up again: an allocation may have finished while this write waited.
      const now = await this.lookup(cluster);
      if (now.kind === Kind.Data && now.copied) return this.file.writeFully(iov, now.host + inCluster);
      return this.allocateAndWrite(cluster, now, iov, inCluster);
    });
  }

  /** Run `fn` while no other allocation or discard touches guest cluster `cluster`. */
  private async exclusively(cluster: number, fn: () => Promise<void>): Promise<void> {
    for (let other = this.busy.get(cluster); other; other = this.busy.get(cluster)) {
      await other.catch(() => undefined);
    }
    const p = fn();
    const settled = p.catch(() => undefined);
    this.busy.set(cluster, settled);
    try {
      await p;
    } finally {
      if (this.busy.get(cluster) === settled) this.busy.delete(cluster);
    }
  }

  /** Run `fn` alone among allocations (refcount scan, new tables). */
  private underMetaLock<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.metaTail.then(fn, fn);
    this.metaTail = run.catch(() => undefined);
    return run;
  }

  /**
   * Give guest cluster `cluster` a host cluster of its own and write `iov` at `inCluster` into it,
   * filling the rest from what the guest saw before (backing data or zeroes).
   */
  private async allocateAndWrite(
    cluster: number,
    old: Mapping,
    iov: Buffer[],
    inCluster: number,
  ): Promise<void> {
    const refcounts = this.refcounts!;
    const l1Index = Math.floor(cluster / this.l2Entries);
    const { tableOffset, table } = await this.underMetaLock(() => this.ensureL2(l1Index));
    const host = await this.underMetaLock(() => refcounts.allocate());

    let n = 0;
    for (const b of iov) n += b.length;
    const tail = this.clusterSize - inCluster - n;
    const guestBase = cluster * this.clusterSize;
    let head: Buffer = ZERO.subarray(0, inCluster);
    let rest: Buffer = ZERO.subarray(0, tail);
    if (old.kind === Kind.Unallocated && this.backing && guestBase < this.backing.sizeBytes) {
      // Copy-on-write from the backing image for the bytes this write does not cover.
      if (inCluster > 0) {
        head = Buffer.allocUnsafe(inCluster);
        await this.readBacking([head], guestBase, inCluster);
      }
      if (tail > 0) {
        rest = Buffer.allocUnsafe(tail);
        await this.readBacking([rest], guestBase + inCluster + n, tail);
      }
    } else if (old.kind === Kind.Compressed) {
      // The guest's data before this write, inflated: its other bytes go into the new cluster.
      const data = await this.inflate(old, cluster);
      head = data.subarray(0, inCluster);
      rest = data.subarray(inCluster + n);
    } else if (old.kind === Kind.Data) {
      // A shared cluster (no COPIED flag): copy its other bytes.
      if (inCluster > 0) {
        head = Buffer.allocUnsafe(inCluster);
        await this.file.readFully([head], old.host);
      }
      if (tail > 0) {
        rest = Buffer.allocUnsafe(tail);
        await this.file.readFully([rest], old.host + inCluster + n);
      }
    }
    await this.file.writeFully([head, ...iov, rest], host);
    await this.file.sync(); // data and refcount durable before the L2 entry points at them
    await this.setL2(table, tableOffset, cluster, host, false);
    if (old.kind === Kind.Compressed) {
      await this.file.sync();
      await this.freeCompressed(old);
    } else if (old.host !== 0 && old.kind !== Kind.Unallocated) {
      // The old cluster (zero-flagged preallocation or shared) loses this reference only once the
      // new L2 entry is durable.
      await this.file.sync();
      await this.underMetaLock(() => refcounts.free(old.host));
    }
  }

  /** The L2 table for `l1Index`, created (durably, before the L1 entry points at it) if absent. */
  private async ensureL2(l1Index: number): Promise<{ tableOffset: number; table: Buffer }> {
    const existing = this.lookupL1(l1Index);
    if (existing !== 0) return { tableOffset: existing, table: await this.l2Table(l1Index, existing) };
    const tableOffset = await this.refcounts!.allocate();
    const table = Buffer.alloc(this.clusterSize);
    await this.file.writeFully([table], tableOffset);
    await this.file.sync();
    const entry = this.l1.subarray(l1Index * 8, l1Index * 8 + 8);
    writeOffset(entry, 0, tableOffset);
    entry.writeUInt32BE((entry.readUInt32BE(0) | COPIED_HI) >>> 0, 0);
    this.l2Tables.set(l1Index, Promise.resolve(table));
    await this.file.writeFully([entry], this.header.l1TableOffset + l1Index * 8);
    return { tableOffset, table };
  }

  /** Point guest cluster `cluster` at `host` (0: unallocated), or mark it zero (v3), and write the entry. */
  private async setL2(
    table: Buffer,
    tableOffset: number,
    cluster: number,
    host: number,
    zero: boolean,
  ): Promise<void> {
    const i = (cluster % this.l2Entries) * 8;
    const hi = host === 0 ? 0 : (Math.floor(host / 0x1_0000_0000) | COPIED_HI) >>> 0;
    table.writeUInt32BE(hi, i);
    table.writeUInt32BE(((host >>> 0) | (zero ? ZERO_LO : 0)) >>> 0, i + 4);
    await this.file.writeFully([table.subarray(i, i + 8)], tableOffset + i);
  }

  /**
   * Deallocate: whole clusters lose their host cluster and read as zeroes (unallocated, or the v3
   * zero flag when a backing image would otherwise show through); partial clusters get zeroes written.
   */
  async discard(offset: number, length: number): Promise<void> {
    this.checkWritable();
    const end = offset + length;
    const freed: Mapping[] = [];
    let pos = offset;
    while (pos < end) {
      const cluster = Math.floor(pos / this.clusterSize);
      const inCluster = pos % this.clusterSize;
      const n = Math.min(this.clusterSize - inCluster, end - pos);
      if (n === this.clusterSize) {
        await this.exclusively(cluster, () => this.discardCluster(cluster, freed));
      } else {
        const m = await this.lookup(cluster);
        const readsZero = m.kind === Kind.Zero || (m.kind === Kind.Unallocated && !this.backing);
        if (!readsZero) await this.writev([ZERO.subarray(0, n)], pos);
      }
      pos += n;
    }
    if (freed.length === 0) return;
    await this.file.sync(); // the cleared L2 entries are durable before the refcounts drop
    const refcounts = this.refcounts!;
    for (const m of freed) {
      if (m.kind === Kind.Compressed) await this.freeCompressed(m);
      else await this.underMetaLock(() => refcounts.free(m.host));
    }
  }

  private async discardCluster(cluster: number, freed: Mapping[]): Promise<void> {
    const m = await this.lookup(cluster);
    const needZeroFlag = this.backing !== undefined && cluster * this.clusterSize < this.backing.sizeBytes;
    if (m.kind === Kind.Zero && m.host === 0) return;
    if (m.kind === Kind.Unallocated && !needZeroFlag) return;
    if (needZeroFlag && this.header.version === 2) {
      // Version 2 has no zero flag: the cluster must hold zeroes to hide the backing data.
      await this.writePieceLocked(cluster);
      return;
    }
    const l1Index = Math.floor(cluster / this.l2Entries);
    const { tableOffset, table } = await this.underMetaLock(() => this.ensureL2(l1Index));
    await this.setL2(table, tableOffset, cluster, 0, needZeroFlag);
    if (m.host !== 0) freed.push(m);
  }

  /** Zero a whole cluster from inside exclusively(). */
  private async writePieceLocked(cluster: number): Promise<void> {
    const zeroes = [ZERO.subarray(0, this.clusterSize)];
    const now = await this.lookup(cluster);
    if (now.kind === Kind.Data && now.copied) return this.file.writeFully(zeroes, now.host);
    return this.allocateAndWrite(cluster, now, zeroes, 0);
  }

  async flush(): Promise<void> {
    this.checkOpen();
    if (!this.readOnly) await this.file.sync();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      if (!this.readOnly) {
        await Promise.all([...this.busy.values()]);
        await this.file.sync();
      }
    } finally {
      await this.file.fh.close();
      await this.backing?.close();
    }
  }

  private checkOpen(): void {
    if (this.closed) throw new Error(`${this.file.label}: image is closed`);
  }

  private checkWritable(): void {
    this.checkOpen();
    if (this.readOnly) throw new Error(`${this.file.label}: image is open read-only`);
  }
}

/** A raw backing file: its bytes are the guest's, reads past its end are zeroes. */
class RawBacking implements BackingImage {
  private readonly file: SyncedFile;
  constructor(
    fh: FileHandle,
    readonly sizeBytes: number,
    label: string,
  ) {
    this.file = new SyncedFile(fh, label);
  }
  readv(iov: readonly Buffer[], offset: number): Promise<void> {
    return this.file.readFully(iov, offset);
  }
  close(): Promise<void> {
    return this.file.fh.close();
  }
}

async function openBacking(
  path: string,
  format: string | undefined,
  where: string,
  depth: number,
): Promise<BackingImage> {
  const label = `${where}: backing file ${path}`;
  if (format !== undefined && format !== "raw" && format !== "qcow2") {
    throw new Error(`${label}: backing format "${format}" is not supported (raw and qcow2 are)`);
  }
  const fh = await open(path, constants.O_RDONLY).catch((err: Error) => {
    throw new Error(`${label}: cannot open: ${err.message}`, { cause: err });
  });
  let isQcow = format === "qcow2";
  if (format === undefined) {
    const magic = Buffer.alloc(4);
    const { bytesRead } = await fh.read(magic, 0, 4, 0);
    isQcow = bytesRead === 4 && magic.readUInt32BE(0) === QCOW_MAGIC;
  }
  if (isQcow) {
    await fh.close();
    return QcowImage.open(path, { readOnly: true, where: `${where}: backing file`, depth });
  }
  const st = await fh.stat();
  return new RawBacking(fh, st.size, label);
}
