/**
 * Reads FUSE requests from /dev/fuse on its own thread. A read on /dev/fuse blocks until the kernel
 * has a request; doing that on the main thread would stall the event loop, and on the libuv
 * threadpool would pin pool threads the file handler's I/O needs. This thread only reads: each
 * request is read into a request buffer (an ArrayBuffer) that is then transferred, not copied, to the
 * main thread, which serves it (many at once) and transfers it back for reuse. With every buffer out
 * the reader waits, so the number of requests in flight is bounded by the buffer count.
 *
 * Plain ArrayBuffers moved back and forth rather than one SharedArrayBuffer: V8 copies out of shared
 * memory with relaxed-atomic loads, several times slower than memcpy (measured here: 0.18 ms against
 * 0.03 ms per MiB), and the `ram` handler copies every written byte.
 *
 * Control words (Int32Array over `control`): [0] generation, bumped by the main thread after it
 * returns a buffer; [1] start word: 0 until the mount exists, 1 to start reading, -1 to exit.
 *
 * The thread is started (and its module loaded) before mount(8) runs: once mounted, any file access
 * to the mount — even by this process, whose module loader needs the libuv threadpool — waits for
 * the FUSE_INIT reply, so the reader must not depend on anything that could be waiting on the mount.
 */
import { readSync } from "node:fs";
import { parentPort, receiveMessageOnPort, workerData } from "node:worker_threads";
import { CTL_GENERATION, CTL_START, type ReaderMessage, type ReaderWorkerData } from "./reader_messages.js";

function run(): void {
  const port = parentPort;
  if (!port) throw new Error("dev_reader_worker must run as a worker thread");
  const { fd, control, returns, bufferSize, bufferCount } = workerData as ReaderWorkerData;
  const ctl = new Int32Array(control);
  const pool: ArrayBuffer[] = [];
  let allocated = 0;
  const drain = () => {
    for (let m = receiveMessageOnPort(returns); m; m = receiveMessageOnPort(returns)) {
      pool.push(m.message as ArrayBuffer);
    }
  };

  port.postMessage({ type: "ready" } satisfies ReaderMessage);
  while (Atomics.load(ctl, CTL_START) === 0) Atomics.wait(ctl, CTL_START, 0);
  if (Atomics.load(ctl, CTL_START) < 0) {
    port.postMessage({ type: "end", reason: "mount abandoned" } satisfies ReaderMessage);
    return;
  }

  for (;;) {
    drain();
    if (pool.length === 0 && allocated < bufferCount) {
      pool.push(new ArrayBuffer(bufferSize));
      allocated++;
    }
    if (pool.length === 0) {
      const gen = Atomics.load(ctl, CTL_GENERATION);
      drain();
      if (pool.length === 0) Atomics.wait(ctl, CTL_GENERATION, gen);
      continue;
    }
    const buffer = pool.pop() as ArrayBuffer;
    let length: number;
    try {
      length = readSync(fd, new Uint8Array(buffer), 0, bufferSize, null);
    } catch (err) {
      pool.push(buffer);
      const code = (err as NodeJS.ErrnoException).code;
      // ENOENT: the request was interrupted before we read it; EINTR/EAGAIN: just retry.
      if (code === "ENOENT" || code === "EINTR" || code === "EAGAIN") continue;
      // ENODEV: unmounted (the normal end); anything else ends the session too, with its reason.
      const reason = code === "ENODEV" ? "unmounted" : (err as Error).message;
      port.postMessage({ type: "end", reason } satisfies ReaderMessage);
      return;
    }
    port.postMessage({ type: "request", buffer, length } satisfies ReaderMessage, [buffer]);
  }
}

run();
