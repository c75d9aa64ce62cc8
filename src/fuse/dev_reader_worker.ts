/**
 * Reads FUSE requests from /dev/fuse on its own thread. A read on /dev/fuse blocks until the kernel
 * has a request; doing that on the main thread would stall the event loop, and on the libuv
 * threadpool would pin pool threads the file handler's I/O needs. This thread only reads: each
 * request lands in a free slot of a shared buffer and its slot number is posted to the main thread,
 * which serves it (many at once) and frees the slot. With every slot busy the reader waits, so the
 * number of requests in flight is bounded by the slot count.
 *
 * Control words (Int32Array over `control`): [0] generation, bumped by the main thread whenever it
 * frees a slot, and by start/abort; [1 + i] is 1 while slot i holds a request; [1 + slotCount] is the
 * start word: 0 until the mount exists, 1 to start reading, -1 to exit without reading.
 *
 * The thread is started (and its module loaded) before mount(8) runs: once mounted, any file access
 * to the mount — even by this process, whose module loader needs the libuv threadpool — waits for
 * the FUSE_INIT reply, so the reader must not depend on anything that could be waiting on the mount.
 */
import { readSync } from "node:fs";
import { parentPort, workerData } from "node:worker_threads";

export interface ReaderWorkerData {
  readonly fd: number;
  readonly slots: SharedArrayBuffer;
  readonly control: SharedArrayBuffer;
  readonly slotSize: number;
  readonly slotCount: number;
}

export type ReaderMessage =
  | { readonly type: "ready" }
  | { readonly type: "request"; readonly slot: number; readonly length: number }
  | { readonly type: "end"; readonly reason: string };

function run(): void {
  const port = parentPort;
  if (!port) throw new Error("dev_reader_worker must run as a worker thread");
  const { fd, slots, control, slotSize, slotCount } = workerData as ReaderWorkerData;
  const ctl = new Int32Array(control);
  const views: Buffer[] = [];
  for (let i = 0; i < slotCount; i++) views.push(Buffer.from(slots, i * slotSize, slotSize));
  let next = 0;
  const post = (m: ReaderMessage) => port.postMessage(m);
  const start = 1 + slotCount;

  post({ type: "ready" });
  while (Atomics.load(ctl, start) === 0) Atomics.wait(ctl, start, 0);
  if (Atomics.load(ctl, start) < 0) {
    post({ type: "end", reason: "mount abandoned" });
    return;
  }

  for (;;) {
    let slot = -1;
    while (slot < 0) {
      const gen = Atomics.load(ctl, 0);
      for (let k = 0; k < slotCount; k++) {
        const i = (next + k) % slotCount;
        if (Atomics.load(ctl, 1 + i) === 0) {
          slot = i;
          break;
        }
      }
      if (slot < 0) Atomics.wait(ctl, 0, gen);
    }
    next = (slot + 1) % slotCount;
    Atomics.store(ctl, 1 + slot, 1);
    let length: number;
    try {
      length = readSync(fd, views[slot], 0, slotSize, null);
    } catch (err) {
      Atomics.store(ctl, 1 + slot, 0);
      const code = (err as NodeJS.ErrnoException).code;
      // ENOENT: the request was interrupted before we read it; EINTR/EAGAIN: just retry.
      if (code === "ENOENT" || code === "EINTR" || code === "EAGAIN") continue;
      // ENODEV: unmounted (the normal end); anything else ends the session too, with its reason.
      post({ type: "end", reason: code === "ENODEV" ? "unmounted" : (err as Error).message });
      return;
    }
    post({ type: "request", slot, length });
  }
}

run();
