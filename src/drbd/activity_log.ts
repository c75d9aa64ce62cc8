/**
 * The DRBD 8.4 activity log (drbd_actlog.c): the on-disk transaction ring a Primary writes before its
 * writes reach the disk, its replay after a crash (drbdmeta apply-al), and the writer that keeps the set
 * of hot 4 MiB extents, byte for byte as the kernel and drbd-utils do.
 */
import { crc32c } from "@node-rs/crc32";
import { DrbdMetadataError, type MetadataLayout, type MetadataStore, SECTOR } from "./metadata_layout.js";

// ---------------------------------------------------------------------------------------------------------
// Activity log transactions (drbd_actlog.c struct al_transaction_on_disk, 4096 bytes)

export const DRBD_AL_MAGIC = 0x69cb65a2;
export const AL_TR_UPDATE = 0;
export const AL_TR_INITIALIZED = 0xffff;
export const AL_UPDATES_PER_TRANSACTION = 64;
export const AL_CONTEXT_PER_TRANSACTION = 919;
/** An activity-log extent is 4 MiB: extent = sector >> 13. */
export const AL_EXTENT_SHIFT_SECT = 13;
export const LC_FREE = 0xffffffff;

/** DRBD's crc32c: the Castagnoli polynomial from seed 0, without the final inversion (crc32c(0, buf, len)). */
export function drbdCrc32c(b: Buffer): number {
  // @node-rs/crc32 computes the standard form ~raw(~init); init 0xffffffff makes the raw seed 0.
  return ~crc32c(b, 0xffffffff) >>> 0;
}

export interface AlUpdate {
  slot: number;
  extent: number;
}

export interface AlTransaction {
  trNumber: number;
  type: number;
  updates: AlUpdate[];
  /** al-extents at the time of writing. */
  contextSize: number;
  contextStartSlot: number;
  /** Extent numbers of slots contextStartSlot… (LC_FREE for unused), at most 919. */
  context: number[];
}

export function encodeAlTransaction(tr: AlTransaction): Buffer {
  if (tr.updates.length > AL_UPDATES_PER_TRANSACTION)
    throw new DrbdMetadataError(
      "activity log",
      `${tr.updates.length} updates exceed ${AL_UPDATES_PER_TRANSACTION}`,
    );
  if (tr.context.length > AL_CONTEXT_PER_TRANSACTION)
    throw new DrbdMetadataError(
      "activity log",
      `context of ${tr.context.length} exceeds ${AL_CONTEXT_PER_TRANSACTION}`,
    );
  const b = Buffer.alloc(4096);
  b.writeUInt32BE(DRBD_AL_MAGIC, 0);
  b.writeUInt32BE(tr.trNumber >>> 0, 4);
  b.writeUInt16BE(tr.type, 12);
  b.writeUInt16BE(tr.updates.length, 14);
  b.writeUInt16BE(tr.contextSize, 16);
  b.writeUInt16BE(tr.contextStartSlot, 18);
  for (let i = 0; i < AL_UPDATES_PER_TRANSACTION; i++) {
    const u = tr.updates[i];
    b.writeUInt16BE(u ? u.slot : 0xffff, 36 + i * 2);
    b.writeUInt32BE(u ? u.extent >>> 0 : LC_FREE, 164 + i * 4);
  }
  for (let i = 0; i < AL_CONTEXT_PER_TRANSACTION; i++)
    b.writeUInt32BE((tr.context[i] ?? LC_FREE) >>> 0, 420 + i * 4);
  b.writeUInt32BE(drbdCrc32c(b), 8);
  return b;
}

/** A transaction block, or undefined when magic or crc do not match (a torn or never-written block). */
export function decodeAlTransaction(block: Buffer): AlTransaction | undefined {
  if (block.length !== 4096)
    throw new DrbdMetadataError("activity log", `block of ${block.length} bytes, expected 4096`);
  if (block.readUInt32BE(0) !== DRBD_AL_MAGIC) return undefined;
  const stored = block.readUInt32BE(8);
  const copy = Buffer.from(block);
  copy.writeUInt32BE(0, 8);
  if (drbdCrc32c(copy) !== stored) return undefined;
  const n = block.readUInt16BE(14);
  const updates: AlUpdate[] = [];
  for (let i = 0; i < AL_UPDATES_PER_TRANSACTION; i++) {
    const slot = block.readUInt16BE(36 + i * 2);
    if (i >= n && slot === 0xffff) continue;
    updates.push({ slot, extent: block.readUInt32BE(164 + i * 4) });
  }
  const context: number[] = [];
  for (let i = 0; i < AL_CONTEXT_PER_TRANSACTION; i++) context.push(block.readUInt32BE(420 + i * 4));
  return {
    trNumber: block.readUInt32BE(4),
    type: block.readUInt16BE(12),
    updates,
    contextSize: block.readUInt16BE(16),
    contextStartSlot: block.readUInt16BE(18),
    context,
  };
}

/** The 4 KiB ring slot of transaction number t (al_tr_number_to_on_disk_sector, in 4 KiB blocks). */
export function alRingSlot(trNumber: number, alStripes: number, alStripeSize4k: number): number {
  const t = trNumber % (alStripes * alStripeSize4k);
  return (t % alStripes) * alStripeSize4k + Math.floor(t / alStripes);
}

/** A fresh activity log as drbdmeta create-md writes it: every block AL_TR_INITIALIZED with a valid crc. */
export function initializedActivityLog(alStripes: number, alStripeSize4k: number): Buffer {
  const n = alStripes * alStripeSize4k;
  const block = Buffer.alloc(4096);
  block.writeUInt32BE(DRBD_AL_MAGIC, 0);
  block.writeUInt16BE(AL_TR_INITIALIZED, 12);
  block.writeUInt32BE(drbdCrc32c(block), 8);
  const out = Buffer.alloc(n * 4096);
  for (let i = 0; i < n; i++) block.copy(out, i * 4096);
  return out;
}

/**
 * Reconstructs the active extent set at the newest transaction (drbdmeta replay_al_84): decode every block
 * in transaction order, find the oldest and newest valid update transactions (serial-number arithmetic on
 * tr_number), and replay context snapshots then updates from oldest to newest. Returns the hot extents.
 */
export function replayActivityLog(al: Buffer, alStripes: number, alStripeSize4k: number): Set<number> {
  const n = alStripes * alStripeSize4k;
  if (al.length !== n * 4096)
    throw new DrbdMetadataError("activity log", `expected ${n * 4096} bytes, got ${al.length}`);
  const trs: (AlTransaction | undefined)[] = [];
  let valid = 0;
  let oldest = -1;
  let newest = -1;
  for (let b = 0; b < n; b++) {
    const slot = alRingSlot(b, alStripes, alStripeSize4k);
    const tr = decodeAlTransaction(al.subarray(slot * 4096, slot * 4096 + 4096));
    trs.push(tr);
    if (!tr) continue;
    valid++;
    if (tr.type === AL_TR_INITIALIZED) continue;
    if (tr.type !== AL_TR_UPDATE)
      throw new DrbdMetadataError("activity log", `transaction ${tr.trNumber} has unknown type ${tr.type}`);
    if (oldest < 0) {
      oldest = newest = b;
      continue;
    }
    if ((tr.trNumber - (trs[oldest] as AlTransaction).trNumber) << 0 < 0) oldest = b;
    if ((tr.trNumber - (trs[newest] as AlTransaction).trNumber) << 0 > 0) newest = b;
  }
  if (valid === 0) throw new DrbdMetadataError("activity log", "no valid block found (was create-md run?)");
  const hot = new Map<number, number>();
  if (oldest >= 0) {
    const last = newest < oldest ? newest + n : newest;
    for (let b = oldest; b <= last; b++) {
      const tr = trs[b % n];
      if (!tr || tr.type === AL_TR_INITIALIZED) continue;
      tr.context.forEach((extent, i) => {
        const slot = tr.contextStartSlot + i;
        if (extent === LC_FREE && slot >= tr.contextSize) return;
        hot.set(slot, extent);
      });
      for (const u of tr.updates) hot.set(u.slot, u.extent);
    }
  }
  return new Set([...hot.values()].filter((e) => e !== LC_FREE));
}

/** Marks every 4 KiB block of the given 4 MiB extents out of sync (1024 bits per extent). */
export function markExtentsOutOfSync(bitmap: Buffer, bmBits: number, extents: Iterable<number>): number {
  let marked = 0;
  for (const e of extents) {
    const first = e * 1024;
    const end = Math.min(first + 1024, bmBits);
    for (let bit = first; bit < end; bit++) {
      const byte = bit >> 3;
      const mask = 1 << (bit & 7);
      if (((bitmap[byte] as number) & mask) === 0) {
        bitmap[byte] = (bitmap[byte] as number) | mask;
        marked++;
      }
    }
  }
  return marked;
}

export async function readActivityLog(store: MetadataStore, layout: MetadataLayout): Promise<Buffer> {
  const off = (layout.mdOffsetSect + layout.alOffset) * SECTOR;
  return store.read(off, layout.alStripes * layout.alStripeSize4k * 4096);
}

/** Writes one AL transaction to its ring slot (the caller keeps tr_number increasing by one). */
export async function writeAlTransaction(
  store: MetadataStore,
  layout: MetadataLayout,
  tr: AlTransaction,
): Promise<void> {
  const slot = alRingSlot(tr.trNumber, layout.alStripes, layout.alStripeSize4k);
  await store.write((layout.mdOffsetSect + layout.alOffset) * SECTOR + slot * 4096, encodeAlTransaction(tr));
}

// ---------------------------------------------------------------------------------------------------------
// The activity log writer (drbd_actlog.c drbd_al_begin_io / al_write_transaction / drbd_al_complete_io)

/**
 * The active set of 4 MiB extents of a Primary, persisted as AL transactions the way the kernel writes them,
 * so that apply-al (ours or drbdmeta's) after a crash resyncs exactly these extents.
 *
 * `begin(sector, sectors)` pins the extents a write touches; if any is not active it first writes one
 * transaction (at most 64 slot changes) that moves them in, evicting least-recently-used unpinned extents
 * (after `beforeEvict` persisted their bitmap bits), and returns once that transaction is on stable storage. `complete()` unpins. Each transaction also carries
 * a 919-slot window of the slot table ("context"), rotating through all slots, so that the ring alone
 * reconstructs the set. Transactions are written one at a time, in tr_number order.
 */
export class ActivityLog {
  private readonly slots: number[];
  private readonly pins: number[];
  private readonly lastUse: number[];
  private readonly slotOf = new Map<number, number>();
  private trNumber: number;
  private cycle = 0;
  private clock = 0;
  private writing: Promise<void> = Promise.resolve();
  private waiters: (() => void)[] = [];
  private completions = 0;

  constructor(
    private readonly store: MetadataStore,
    private layout: MetadataLayout,
    readonly nrElements: number,
    firstTrNumber = 0,
    /**
     * Called before a transaction evicts active extents, with their numbers (drbd_bm_write_hinted in
     * al_write_transaction): the owner writes the bitmap bits of those extents to stable storage first,
     * because after the eviction a crash no longer marks the extent out of sync by itself.
     */
    private readonly beforeEvict?: (extents: number[]) => Promise<void>,
  ) {
    if (!Number.isInteger(nrElements) || nrElements < 7 || nrElements > 0xfffe)
      throw new DrbdMetadataError("activity log", `al-extents ${nrElements} outside 7..65534`);
    this.slots = new Array<number>(nrElements).fill(LC_FREE);
    this.pins = new Array<number>(nrElements).fill(0);
    this.lastUse = new Array<number>(nrElements).fill(0);
    this.trNumber = firstTrNumber >>> 0;
  }

  /** The extents currently in the active set. */
  get activeExtents(): number[] {
    return this.slots.filter((e) => e !== LC_FREE);
  }

  /** The number of the next transaction to be written. */
  get nextTrNumber(): number {
    return this.trNumber;
  }

  /**
   * begin()'s fast path without a promise (drbd_al_begin_io_fastpath): when every extent the write touches
   * is active, pins them and returns true; otherwise pins nothing and returns false (then call begin()).
   */
  tryBegin(sector: number, sectors: number): boolean {
    const first = firstExtent(sector);
    const last = lastExtent(sector, sectors);
    if (last - first >= AL_UPDATES_PER_TRANSACTION) return false;
    for (let e = first; e <= last; e++) if (!this.slotOf.has(e)) return false;
    for (let e = first; e <= last; e++) this.touch(this.slotOf.get(e) as number, 1);
    return true;
  }

  async begin(sector: number, sectors: number): Promise<void> {
    // Fast path: all active, pin them now (pins are what eviction respects).
    if (this.tryBegin(sector, sectors)) return;
    const wanted = extentsOf(sector, sectors);
    if (wanted.length > AL_UPDATES_PER_TRANSACTION)
      throw new DrbdMetadataError("activity log", `one write spans ${wanted.length} extents, at most 64`);
    for (;;) {
      const result = await this.serialized(() => this.bringIn(wanted));
      if (result === true) return;
      // All slots were pinned; wait for a completion unless one came in since that check.
      if (this.completions === result) await new Promise<void>((r) => this.waiters.push(r));
    }
  }

  /**
   * The metadata moved (drbdadm resize of internal metadata): after every earlier transaction, a fresh ring
   * at the new place, then transactions without updates whose context windows carry every slot, so the ring
   * there alone gives the whole active set (as drbd_al_initialize does). Later transactions go there.
   */
  relocate(layout: MetadataLayout): Promise<void> {
    return this.serialized(async () => {
      this.layout = layout;
      await this.store.write(
        (layout.mdOffsetSect + layout.alOffset) * SECTOR,
        initializedActivityLog(layout.alStripes, layout.alStripeSize4k),
      );
      for (let start = 0; start < this.nrElements; start += AL_CONTEXT_PER_TRANSACTION) {
        await writeAlTransaction(this.store, layout, {
          trNumber: this.trNumber,
          type: AL_TR_UPDATE,
          updates: [],
          contextSize: this.nrElements,
          contextStartSlot: start,
          context: this.slots.slice(start, start + AL_CONTEXT_PER_TRANSACTION),
        });
        this.trNumber = (this.trNumber + 1) >>> 0;
      }
      this.cycle = 0;
      await this.store.flush();
    });
  }

  complete(sector: number, sectors: number): void {
    const last = lastExtent(sector, sectors);
    for (let e = firstExtent(sector); e <= last; e++) {
      const slot = this.slotOf.get(e);
      if (slot === undefined || this.pins[slot] === 0)
        throw new DrbdMetadataError("activity log", `complete for extent ${e} that is not pinned`);
      this.pins[slot] = (this.pins[slot] as number) - 1;
    }
    this.completions++;
    const w = this.waiters;
    this.waiters = [];
    for (const wake of w) wake();
  }

  private touch(slot: number, pin: number): void {
    this.pins[slot] = (this.pins[slot] as number) + pin;
    this.lastUse[slot] = ++this.clock;
  }

  /** Free slots first, then the least recently used unpinned ones not among `keep`. */
  private pickVictims(n: number, keep: Set<number>): number[] | undefined {
    const candidates: number[] = [];
    for (let s = 0; s < this.nrElements; s++) {
      if (this.pins[s] !== 0) continue;
      const e = this.slots[s] as number;
      if (e !== LC_FREE && keep.has(e)) continue;
      candidates.push(s);
    }
    candidates.sort((a, b) => {
      const fa = this.slots[a] === LC_FREE ? 0 : 1;
      const fb = this.slots[b] === LC_FREE ? 0 : 1;
      return fa - fb || (this.lastUse[a] as number) - (this.lastUse[b] as number);
    });
    return candidates.length >= n ? candidates.slice(0, n) : undefined;
  }

  /** Runs `fn` after every earlier transaction has finished: one transaction at a time, in order. */
  private serialized<R>(fn: () => Promise<R>): Promise<R> {
    const p = this.writing.then(fn);
    this.writing = p.then(
      () => {},
      () => {},
    );
    return p;
  }

  /**
   * Moves the missing extents of `wanted` into slots with one transaction and pins all of `wanted`.
   * When every slot is pinned it returns the completion count it saw, and the caller waits for a completion
   * and tries again.
   */
  private async bringIn(wanted: number[]): Promise<true | number> {
    const missing = wanted.filter((e) => !this.slotOf.has(e));
    if (missing.length > 0) {
      const victims = this.pickVictims(missing.length, new Set(wanted));
      if (!victims) return this.completions;
      const updates = missing.map((extent, i) => ({ slot: victims[i] as number, extent }));
      const evicted = updates.map((u) => this.slots[u.slot] as number).filter((e) => e !== LC_FREE);
      if (evicted.length > 0 && this.beforeEvict) await this.beforeEvict(evicted);
      const tr: AlTransaction = {
        trNumber: this.trNumber,
        type: AL_TR_UPDATE,
        updates,
        contextSize: this.nrElements,
        contextStartSlot: this.cycle,
        // The slots' extents before this transaction, as lc_number is before the commit.
        context: this.slots.slice(this.cycle, this.cycle + AL_CONTEXT_PER_TRANSACTION),
      };
      await writeAlTransaction(this.store, this.layout, tr);
      await this.store.flush();
      this.trNumber = (this.trNumber + 1) >>> 0;
      this.cycle += AL_CONTEXT_PER_TRANSACTION;
      if (this.cycle >= this.nrElements) this.cycle = 0;
      for (const u of updates) {
        const old = this.slots[u.slot] as number;
        if (old !== LC_FREE) this.slotOf.delete(old);
        this.slots[u.slot] = u.extent;
        this.slotOf.set(u.extent, u.slot);
      }
    }
    for (const e of wanted) this.touch(this.slotOf.get(e) as number, 1);
    return true;
  }
}

/** The 4 MiB extents a request of `sectors` sectors at `sector` touches. */
function firstExtent(sector: number): number {
  return Math.floor(sector / 2 ** AL_EXTENT_SHIFT_SECT);
}

function lastExtent(sector: number, sectors: number): number {
  return Math.floor((sector + Math.max(sectors, 1) - 1) / 2 ** AL_EXTENT_SHIFT_SECT);
}

function extentsOf(sector: number, sectors: number): number[] {
  const first = firstExtent(sector);
  const last = lastExtent(sector, sectors);
  const out: number[] = [];
  for (let e = first; e <= last; e++) out.push(e);
  return out;
}
