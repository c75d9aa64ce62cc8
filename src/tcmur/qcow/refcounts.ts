/**
 * qcow2 cluster reference counts (QEMU docs/interop/qcow2.txt, "Cluster mapping" / refcount table
 * and refcount blocks): every host cluster in use (header, tables, data) has refcount 1 here, and a
 * free cluster 0. All refcount blocks are held in memory (2 bytes per 64 KiB of image with the
 * default 16-bit refcounts), so allocation is a scan, never a read.
 *
 * Crash order when a cluster is taken: its refcount is written before anything points at it, and
 * the caller syncs before writing that pointer; a crash in between leaves a leaked cluster, which
 * `qemu-img check` reports as a leak, never as corruption.
 *
 * When the image outgrows its refcount table, a larger table is written elsewhere (as QEMU's
 * qcow2_refcount_area does): new refcount blocks and the new table go past everything counted so far,
 * counting themselves; they are synced; then one 12-byte header write switches refcount_table_offset
 * and refcount_table_clusters together, is synced, and only then is the old table freed. A crash
 * before the header write leaves unreferenced clusters outside every refcount block (which qemu-img
 * check does not count); after it, at worst the old table's clusters leak.
 */
import { HeaderField, readOffset, writeOffset, type QcowHeader } from "./header.js";
import type { SyncedFile } from "./synced_file.js";

/** Bits 9-63 of a refcount table entry hold the block's offset (qcow2.txt, "Refcount table entry"). */
const OFFSET_MASK_LO = 0xfffffe00;

export class Refcounts {
  private readonly clusterSize: number;
  private readonly refcountBits: number;
  /** Refcount entries per refcount block. */
  private readonly perBlock: number;
  /** Host offset of each refcount block (0: none yet). */
  private readonly table: number[];
  private readonly blocks: (Buffer | undefined)[];
  /** No cluster below this index is free. */
  private freeHint = 0;
  /** Where the refcount table is now (it moves when it grows). */
  private tableAt: number;
  private tableClusterCount: number;

  private constructor(
    private readonly file: SyncedFile,
    header: QcowHeader,
    tableBytes: Buffer,
  ) {
    this.clusterSize = header.clusterSize;
    this.refcountBits = 2 ** header.refcountOrder;
    this.perBlock = (header.clusterSize * 8) / this.refcountBits;
    this.tableAt = header.refcountTableOffset;
    this.tableClusterCount = header.refcountTableClusters;
    const entries = tableBytes.length / 8;
    this.table = new Array<number>(entries).fill(0);
    this.blocks = new Array<Buffer | undefined>(entries).fill(undefined);
    for (let i = 0; i < entries; i++) {
      const hi = tableBytes.readUInt32BE(i * 8);
      const lo = tableBytes.readUInt32BE(i * 8 + 4) & OFFSET_MASK_LO;
      if (hi >= 0x200000) throw new Error(`${file.label}: refcount table entry ${i} is out of range`);
      this.table[i] = hi * 0x1_0000_0000 + lo;
    }
  }

  /** Read the refcount table and every refcount block it points at. */
  static async load(file: SyncedFile, header: QcowHeader): Promise<Refcounts> {
    const tableBytes = Buffer.alloc(header.refcountTableClusters * header.clusterSize);
    await file.readFully([tableBytes], header.refcountTableOffset);
    const rc = new Refcounts(file, header, tableBytes);
    for (let i = 0; i < rc.table.length; i++) {
      const off = rc.table[i];
      if (off === 0) continue;
      if (off % header.clusterSize !== 0) {
        throw new Error(`${file.label}: refcount block ${i} at ${off} is not cluster aligned`);
      }
      const block = Buffer.alloc(header.clusterSize);
      await file.readFully([block], off);
      rc.blocks[i] = block;
    }
    return rc;
  }

  /** Host offset of the refcount table. */
  get tableOffset(): number {
    return this.tableAt;
  }

  /** Size of the refcount table in clusters. */
  get tableClusters(): number {
    return this.tableClusterCount;
  }

  /** The refcount of the host cluster at index `cluster`. */
  get(cluster: number): number {
    const block = this.blocks[Math.floor(cluster / this.perBlock)];
    if (!block) return 0;
    return readEntry(block, cluster % this.perBlock, this.refcountBits);
  }

  /**
   * Take one free host cluster: its refcount is 1 in memory and written to the file (not synced)
   * when this resolves. Callers serialise allocation (one at a time per image).
   */
  async allocate(): Promise<number> {
    for (;;) {
      let c = this.freeHint;
      while (this.get(c) !== 0) c++;
      const blockIndex = Math.floor(c / this.perBlock);
      if (blockIndex >= this.table.length) {
        await this.growTable(c);
        continue; // c now holds the first new refcount block
      }
      if (!this.blocks[blockIndex]) {
        await this.addBlock(blockIndex, c);
        continue; // c now holds the new refcount block itself
      }
      this.freeHint = c + 1;
      await this.set(c, 1);
      return c * this.clusterSize;
    }
  }

  /** Drop the reference to the host cluster at byte offset `offset` (written, not synced). */
  async free(offset: number): Promise<void> {
    const c = offset / this.clusterSize;
    if (this.get(c) === 0) throw new Error(`${this.file.label}: freeing cluster at ${offset}, which is free`);
    await this.set(c, this.get(c) - 1);
    this.noteFree(c);
  }

  /** Set the refcount of a cluster nothing references to 0 (leak repair; written, not synced). */
  async drop(c: number): Promise<void> {
    await this.set(c, 0);
    this.noteFree(c);
  }

  private noteFree(c: number): void {
    if (this.get(c) === 0 && c < this.freeHint) this.freeHint = c;
  }

  /** Host offsets of the refcount blocks, for a reference scan. */
  blockOffsets(): number[] {
    return this.table.filter((off) => off !== 0);
  }

  /** Every host cluster index whose refcount is not 0. */
  *inUse(): Generator<number> {
    for (let b = 0; b < this.blocks.length; b++) {
      if (!this.blocks[b]) continue;
      for (let i = 0; i < this.perBlock; i++) {
        const c = b * this.perBlock + i;
        if (this.get(c) !== 0) yield c;
      }
    }
  }

  /**
   * A new refcount block for clusters [blockIndex * perBlock, ...), stored in cluster `c` of that
   * range so that it counts itself. The block is durable before the table points at it.
   */
  private async addBlock(blockIndex: number, c: number): Promise<void> {
    const block = Buffer.alloc(this.clusterSize);
    writeEntry(block, c % this.perBlock, this.refcountBits, 1);
    const offset = c * this.clusterSize;
    await this.file.writeFully([block], offset);
    await this.file.sync();
    const entry = Buffer.alloc(8);
    writeOffset(entry, 0, offset);
    await this.file.writeFully([entry], this.tableAt + blockIndex * 8);
    this.table[blockIndex] = offset;
    this.blocks[blockIndex] = block;
  }

  /**
   * A refcount table with room for more blocks, for when cluster `first` (free: every cluster
   * before it is in use) lies past what the current table can count. The new refcount blocks start
   * at `first`, the new table follows them, and the blocks count both. Grows by half (at least one
   * cluster), as QEMU's next_refcount_table_size does, so growth stays rare.
   */
  private async growTable(first: number): Promise<void> {
    const cs = this.clusterSize;
    const oldEntries = this.table.length;
    if (first < oldEntries * this.perBlock) {
      throw new Error(`${this.file.label}: cluster ${first} is counted yet has no refcount block`);
    }
    const entriesPerCluster = cs / 8;
    let tableClusters = Math.max(this.tableClusterCount + 1, Math.ceil((this.tableClusterCount * 3) / 2));
    let newBlocks = 1;
    for (;;) {
      // Enough blocks to count everything up to the end of the new blocks and table.
      while ((oldEntries + newBlocks) * this.perBlock < first + newBlocks + tableClusters) newBlocks++;
      if (oldEntries + newBlocks <= tableClusters * entriesPerCluster) break;
      tableClusters = Math.ceil((oldEntries + newBlocks) / entriesPerCluster);
    }
    if (tableClusters * cs > 64 * 1024 * 1024) {
      throw new Error(`${this.file.label}: the refcount table would exceed 64 MiB`);
    }
    const blocks: Buffer[] = [];
    for (let k = 0; k < newBlocks; k++) blocks.push(Buffer.alloc(cs));
    for (let c = first; c < first + newBlocks + tableClusters; c++) {
      const k = Math.floor(c / this.perBlock) - oldEntries;
      writeEntry(blocks[k], c % this.perBlock, this.refcountBits, 1);
    }
    const tableOffset = (first + newBlocks) * cs;
    const tableBytes = Buffer.alloc(tableClusters * cs);
    for (let i = 0; i < oldEntries; i++) writeOffset(tableBytes, i * 8, this.table[i]);
    for (let k = 0; k < newBlocks; k++) writeOffset(tableBytes, (oldEntries + k) * 8, (first + k) * cs);
    await this.file.writeFully([...blocks, tableBytes], first * cs);
    await this.file.sync(); // the new table and its blocks are durable before the header names them
    const fields = Buffer.alloc(12); // refcount_table_offset (u64) and refcount_table_clusters (u32)
    writeOffset(fields, 0, tableOffset);
    fields.writeUInt32BE(tableClusters, 8);
    await this.file.writeFully([fields], HeaderField.refcountTableOffset);
    await this.file.sync(); // the old table is free only once nothing can point at it
    const oldOffset = this.tableAt;
    const oldClusters = this.tableClusterCount;
    for (let k = 0; k < newBlocks; k++) {
      this.table.push((first + k) * cs);
      this.blocks.push(blocks[k]);
    }
    for (let i = oldEntries + newBlocks; i < tableClusters * entriesPerCluster; i++) {
      this.table.push(0);
      this.blocks.push(undefined);
    }
    this.tableAt = tableOffset;
    this.tableClusterCount = tableClusters;
    for (let i = 0; i < oldClusters; i++) await this.free(oldOffset + i * cs);
  }

  private async set(cluster: number, value: number): Promise<void> {
    const blockIndex = Math.floor(cluster / this.perBlock);
    const block = this.blocks[blockIndex];
    if (!block) throw new Error(`${this.file.label}: no refcount block for cluster ${cluster}`);
    const i = cluster % this.perBlock;
    writeEntry(block, i, this.refcountBits, value);
    // Write the smallest whole-byte span holding the entry.
    const bitStart = i * this.refcountBits;
    const from = Math.floor(bitStart / 8);
    const to = Math.ceil((bitStart + this.refcountBits) / 8);
    await this.file.writeFully([block.subarray(from, to)], this.table[blockIndex] + from);
  }
}

/** Entry `i` of a refcount block of `bits`-wide big-endian entries (qcow2.txt, "Refcount block entry"). */
function readEntry(block: Buffer, i: number, bits: number): number {
  switch (bits) {
    case 8:
      return block[i];
    case 16:
      return block.readUInt16BE(i * 2);
    case 32:
      return block.readUInt32BE(i * 4);
    case 64:
      return readOffset(block, i * 8, "refcount");
    default: {
      // 1, 2 or 4 bits: entries fill each byte from its least significant bit (as QEMU reads them).
      const perByte = 8 / bits;
      const shift = (i % perByte) * bits;
      return (block[Math.floor(i / perByte)] >> shift) & ((1 << bits) - 1);
    }
  }
}

function writeEntry(block: Buffer, i: number, bits: number, value: number): void {
  if (value >= 2 ** bits) throw new Error(`refcount ${value} does not fit ${bits} bits`);
  switch (bits) {
    case 8:
      block[i] = value;
      return;
    case 16:
      block.writeUInt16BE(value, i * 2);
      return;
    case 32:
      block.writeUInt32BE(value, i * 4);
      return;
    case 64:
      writeOffset(block, i * 8, value);
      return;
    default: {
      const perByte = 8 / bits;
      const shift = (i % perByte) * bits;
      const mask = ((1 << bits) - 1) << shift;
      const at = Math.floor(i / perByte);
      block[at] = (block[at] & ~mask) | (value << shift);
    }
  }
}
