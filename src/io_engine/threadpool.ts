/**
 * The fallback engine: Node's fs.readv/writev/fdatasync, which libuv runs on its thread pool. FUA
 * writes are a write then an fdatasync (RWF_DSYNC is not reachable from Node's fs).
 */
import { fdatasync, readv, writev } from "node:fs";
import type { IoEngine } from "./io_engine.js";

export class ThreadpoolEngine implements IoEngine {
  readonly name = "threadpool";
  readonly maxBouncedBytes = Number.MAX_SAFE_INTEGER;

  read(fd: number, iov: readonly Buffer[], pos: number): Promise<number> {
    return new Promise((resolve, reject) => {
      readv(fd, iov, pos, (err, n) => (err ? reject(err) : resolve(n)));
    });
  }

  write(fd: number, iov: readonly Buffer[], pos: number, fua: boolean): Promise<number> {
    return new Promise((resolve, reject) => {
      writev(fd, iov, pos, (err, n) => {
        if (err) reject(err);
        else if (!fua) resolve(n);
        // SBC-3 4.11: FUA data is on the medium before the command completes.
        else fdatasync(fd, (e) => (e ? reject(e) : resolve(n)));
      });
    });
  }

  datasync(fd: number): Promise<void> {
    return new Promise((resolve, reject) => {
      fdatasync(fd, (err) => (err ? reject(err) : resolve()));
    });
  }
}
