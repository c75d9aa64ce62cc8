/**
 * One FUSE connection: the /dev/fuse file descriptor, the reader thread that takes requests off it,
 * and the dispatch of each request to an async handler. Requests are served concurrently — a slow
 * flush does not hold up reads — up to the number of request slots (the tcmu-runner FUSE view it replaces served one at a time).
 *
 * Replies are written with one synchronous write(2) each: a reply to /dev/fuse never blocks (the
 * kernel copies it into the waiting request), so it costs a memcpy, not a wait.
 */
import { writeSync, writevSync } from "node:fs";
import { MessageChannel, Worker, type MessagePort } from "node:worker_threads";
import type { Logger } from "../util/log.js";
import { CTL_GENERATION, CTL_START, type ReaderMessage, type ReaderWorkerData } from "./reader_messages.js";
import { IN_HEADER_SIZE, OUT_HEADER_SIZE, parseInHeader, writeOutHeader, type InHeader } from "./protocol.js";

/** A request as the handler sees it: header, argument bytes, and the whole slot for a zero-copy reply. */
export interface FuseRequest {
  readonly header: InHeader;
  /** The bytes after the header (a view into the slot). */
  readonly arg: Buffer;
  /**
   * The slot's space after the reply header: a READ reply may be built here (fill it, then
   * `replyFromSlot(n)`), saving a buffer per read.
   */
  readonly replySpace: Buffer;
}

/** What a handler returns: reply data, an errno (positive) or "none" for requests with no reply. */
export type FuseResult =
  | { readonly data?: Buffer | readonly Buffer[] }
  | { readonly errno: number }
  | "none"
  | {
      readonly slotBytes: number;
    };

export type FuseHandler = (req: FuseRequest) => Promise<FuseResult>;

export interface FuseSessionOptions {
  /** Bytes of the largest request (max_write plus headers); each request buffer holds one. */
  readonly slotSize: number;
  /** Requests that may be in flight at once (request buffers). */
  readonly slotCount: number;
}

export class FuseSession {
  private readonly worker: Worker;
  private readonly ctl: Int32Array;
  private readonly returns: MessagePort;
  private ended = false;
  /** Resolves once the reader thread is loaded and waiting for start(). */
  readonly ready: Promise<void>;
  private inFlight = 0;
  /** Resolves when the reader thread has stopped (unmount or error). */
  readonly done: Promise<string>;

  constructor(
    readonly fd: number,
    private readonly handler: FuseHandler,
    private readonly log: Logger,
    opts: FuseSessionOptions,
  ) {
    const control = new SharedArrayBuffer(8);
    this.ctl = new Int32Array(control);
    const channel = new MessageChannel();
    this.returns = channel.port1;
    const data: ReaderWorkerData = {
      fd,
      control,
      returns: channel.port2,
      bufferSize: opts.slotSize,
      bufferCount: opts.slotCount,
    };
    this.worker = new Worker(new URL("./dev_reader_worker.js", import.meta.url), {
      workerData: data,
      transferList: [channel.port2],
    });
    let onReady: () => void = () => undefined;
    this.ready = new Promise<void>((r) => (onReady = r));
    this.done = new Promise<string>((resolve) => {
      this.worker.on("message", (m: ReaderMessage) => {
        if (m.type === "request") this.dispatch(m.buffer, m.length);
        else if (m.type === "ready") onReady();
        else {
          this.ended = true;
          resolve(m.reason);
        }
      });
      this.worker.on("error", (err) => {
        this.ended = true;
        this.log.error({ err }, "FUSE reader thread failed");
        resolve(`reader thread failed: ${err.message}`);
      });
      this.worker.on("exit", () => {
        this.ended = true;
        resolve("reader thread exited");
      });
    });
  }

  /** Let the reader thread start reading (the mount now exists), or tell it to exit (`false`). */
  start(go: boolean): void {
    Atomics.store(this.ctl, CTL_START, go ? 1 : -1);
    Atomics.notify(this.ctl, CTL_START);
  }

  /** Requests being served right now (for tests and diagnostics). */
  get requestsInFlight(): number {
    return this.inFlight;
  }

  /** Hand a request buffer back to the reader thread (transferred, not copied). */
  private giveBack(buffer: ArrayBuffer): void {
    if (this.ended) return;
    this.returns.postMessage(buffer, [buffer]);
    Atomics.add(this.ctl, CTL_GENERATION, 1);
    Atomics.notify(this.ctl, CTL_GENERATION);
  }

  private dispatch(buffer: ArrayBuffer, length: number): void {
    const whole = Buffer.from(buffer);
    const buf = whole.subarray(0, length);
    if (length < IN_HEADER_SIZE) {
      this.log.warn({ length }, "short FUSE request ignored");
      this.giveBack(buffer);
      return;
    }
    const header = parseInHeader(buf);
    const req: FuseRequest = {
      header,
      arg: buf.subarray(IN_HEADER_SIZE, Math.min(header.len, length)),
      replySpace: whole.subarray(OUT_HEADER_SIZE),
    };
    this.inFlight++;
    this.handler(req)
      .catch((err: unknown): FuseResult => {
        this.log.error({ err, opcode: header.opcode }, "FUSE request handler failed");
        return { errno: 5 };
      })
      .then((result) => {
        this.inFlight--;
        if (result !== "none") this.reply(whole, header.unique, result);
        this.giveBack(buffer);
      });
  }

  private reply(request: Buffer, unique: bigint, result: Exclude<FuseResult, "none">): void {
    if (this.ended) return;
    try {
      if ("errno" in result) {
        const h = Buffer.alloc(OUT_HEADER_SIZE);
        writeOutHeader(h, OUT_HEADER_SIZE, -result.errno, unique);
        writeSync(this.fd, h);
      } else if ("slotBytes" in result) {
        const whole = request.subarray(0, OUT_HEADER_SIZE + result.slotBytes);
        writeOutHeader(whole, whole.length, 0, unique);
        writeSync(this.fd, whole);
      } else {
        const parts =
          result.data === undefined ? [] : Buffer.isBuffer(result.data) ? [result.data] : result.data;
        let len = OUT_HEADER_SIZE;
        for (const p of parts) len += p.length;
        const h = Buffer.alloc(OUT_HEADER_SIZE);
        writeOutHeader(h, len, 0, unique);
        writevSync(this.fd, [h, ...parts]);
      }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // ENOENT: the kernel gave up on the request (interrupted); ENODEV: the mount is gone.
      if (code !== "ENOENT" && code !== "ENODEV") this.log.warn({ err }, "FUSE reply failed");
    }
  }

  /**
   * Wait for the reader thread to end (the unmount makes its read fail with ENODEV). A thread still
   * blocked in read(2) cannot be terminated; it is unref'ed so it does not keep the process alive.
   */
  async close(timeoutMs = 5000): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<string>((r) => (timer = setTimeout(() => r("timeout"), timeoutMs)));
    const why = await Promise.race([this.done, timeout]);
    clearTimeout(timer);
    this.returns.close();
    if (why === "timeout") {
      this.log.warn("FUSE reader thread still blocked after unmount; leaving it detached");
      this.worker.unref();
      return false;
    }
    return true;
  }
}
