/**
 * The io_uring engine's JS half (native/uring_engine.c does the ring). Requests live in slots of
 * preallocated arrays; completions arrive in one batched callback per event-loop wake-up as
 * (slot, result) pairs in two Int32Arrays shared with the addon. A request that finds no free slot
 * (or, for O_DIRECT from unaligned buffers, no free bounce chunk) waits in a FIFO that completions
 * drain: its length is bounded by the I/O the SCSI layer has outstanding.
 */
import type { IoEngine } from "./io_engine.js";
import { errnoError } from "./io_engine.js";
import { nativeAddon, type NativeAddon } from "./native.js";

/** Requests in flight at once (the ring's completion queue has as many entries). */
const SLOTS = 512;
/**
 * Bounce chunks for O_DIRECT from unaligned buffers: MaxBurstLength (256 KiB, RFC 7143 §13.14) ×
 * the default QueueDepth (64); the slab is allocated on first use and never grows.
 */
const BOUNCE_CHUNK = 256 * 1024;
const BOUNCE_CHUNKS = 64;

const OP_READ = 0;
const OP_WRITE = 1;
const OP_DATASYNC = 2;
const FLAG_DSYNC = 1;
const FLAG_DIRECT = 2;
const FLAG_BLOCK_DEVICE = 4;

const ENOBUFS = 105;
const EAGAIN = 11;

type Settle = (res: number) => void;

interface Waiting {
  op: number;
  fd: number;
  iov: readonly Buffer[];
  pos: number;
  flags: number;
  settle: Settle;
}

const NO_BUFS: readonly Buffer[] = [];

export class UringEngine implements IoEngine {
  readonly name = "io_uring";
  readonly maxBouncedBytes = BOUNCE_CHUNK;
  private readonly ids = new Int32Array(SLOTS);
  private readonly results = new Int32Array(SLOTS);
  private readonly settlers: (Settle | undefined)[] = new Array<Settle | undefined>(SLOTS).fill(undefined);
  /** Keeps the buffers of each request referenced until the kernel is done with them. */
  private readonly buffers: (readonly Buffer[])[] = new Array<readonly Buffer[]>(SLOTS).fill(NO_BUFS);
  private readonly freeSlots: number[] = [];
  private readonly waiting: Waiting[] = [];
  private waitingHead = 0;

  private constructor(private readonly addon: NativeAddon) {
    for (let i = SLOTS - 1; i >= 0; i--) this.freeSlots.push(i);
  }

  /** Start the process's ring, or say why not. */
  static start(): UringEngine | string {
    const a = nativeAddon();
    if (!a) return "native addon not built";
    if (typeof a.uringAvailable !== "function" || !a.uringAvailable()) {
      return "native addon built without liburing (install liburing-dev and run npm ci)";
    }
    const engine = new UringEngine(a as NativeAddon);
    const rc = engine.addon.uringInit(
      SLOTS,
      (count) => engine.onComplete(count),
      engine.ids,
      engine.results,
      BOUNCE_CHUNK,
      BOUNCE_CHUNKS,
    );
    if (rc < 0) return `io_uring_setup failed: ${errnoError("io_uring_setup", rc).code}`;
    return engine;
  }

  /** How completions reach the event loop (see NativeAddon.uringCompletionMode). */
  get completionMode(): string {
    return this.addon.uringCompletionMode?.() ?? "signal";
  }

  read(fd: number, iov: readonly Buffer[], pos: number, direct: boolean): Promise<number> {
    return this.request(OP_READ, fd, iov, pos, direct ? FLAG_DIRECT : 0, "read");
  }

  write(
    fd: number,
    iov: readonly Buffer[],
    pos: number,
    fua: boolean,
    direct: boolean,
    blockDevice = false,
  ): Promise<number> {
    const flags = (fua ? FLAG_DSYNC : 0) | (direct ? FLAG_DIRECT : 0) | (blockDevice ? FLAG_BLOCK_DEVICE : 0);
    return this.request(OP_WRITE, fd, iov, pos, flags, "write");
  }

  async datasync(fd: number): Promise<void> {
    await this.request(OP_DATASYNC, fd, NO_BUFS, 0, 0, "fdatasync");
  }

  private request(
    op: number,
    fd: number,
    iov: readonly Buffer[],
    pos: number,
    flags: number,
    what: string,
  ): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      const settle: Settle = (res) => (res < 0 ? reject(errnoError(what, res)) : resolve(res));
      if (this.waitingHead < this.waiting.length || !this.trySubmit(op, fd, iov, pos, flags, settle)) {
        this.waiting.push({ op, fd, iov, pos, flags, settle });
      }
    });
  }

  /** Submit into a free slot: false when none is free or the bounce slab is exhausted (wait). */
  private trySubmit(
    op: number,
    fd: number,
    iov: readonly Buffer[],
    pos: number,
    flags: number,
    settle: Settle,
  ): boolean {
    const slot = this.freeSlots.pop();
    if (slot === undefined) return false;
    const rc = this.addon.uringSubmit(slot, op, fd, pos, iov, flags);
    if (rc === 0) {
      this.settlers[slot] = settle;
      this.buffers[slot] = iov;
      return true;
    }
    this.freeSlots.push(slot);
    if ((rc === -ENOBUFS || rc === -EAGAIN) && this.freeSlots.length < SLOTS) return false;
    settle(rc);
    return true;
  }

  private onComplete(count: number): void {
    for (let i = 0; i < count; i++) {
      const slot = this.ids[i];
      const settle = this.settlers[slot];
      this.settlers[slot] = undefined;
      this.buffers[slot] = NO_BUFS;
      this.freeSlots.push(slot);
      settle?.(this.results[i]);
    }
    while (this.waitingHead < this.waiting.length) {
      const w = this.waiting[this.waitingHead];
      if (!this.trySubmit(w.op, w.fd, w.iov, w.pos, w.flags, w.settle)) break;
      this.waitingHead++;
    }
    if (this.waitingHead === this.waiting.length) {
      this.waiting.length = 0;
      this.waitingHead = 0;
    }
  }
}
