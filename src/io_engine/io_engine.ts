/** What every I/O engine offers (engine.ts picks one per process). */
import { constants } from "node:os";

export type IoEngineName = "io_uring" | "threadpool";

export interface IoEngine {
  readonly name: IoEngineName;
  /** Read into `iov` at byte `pos`; resolves with the bytes read (short at end of file). */
  read(fd: number, iov: readonly Buffer[], pos: number, direct: boolean): Promise<number>;
  /**
   * Write `iov` at `pos`; with `fua` the data is durable when it resolves. `blockDevice`: `fd` is a
   * block device (io_uring then makes a buffered FUA write an RWF_DSYNC write).
   */
  write(
    fd: number,
    iov: readonly Buffer[],
    pos: number,
    fua: boolean,
    direct: boolean,
    blockDevice?: boolean,
  ): Promise<number>;
  /** fdatasync. */
  datasync(fd: number): Promise<void>;
  /** Largest request that an O_DIRECT transfer from unaligned buffers may have (bounce chunk). */
  readonly maxBouncedBytes: number;
}

const errnoNames = new Map<number, string>(
  Object.entries(constants.errno).map(([name, n]): [number, string] => [n, name]),
);

/** An Error like Node's fs errors (code = errno name) from a negative errno. */
export function errnoError(op: string, negErrno: number): NodeJS.ErrnoException {
  const code = errnoNames.get(-negErrno) ?? `E${-negErrno}`;
  const e: NodeJS.ErrnoException = new Error(`${op}: ${code}`);
  e.code = code;
  e.errno = negErrno;
  return e;
}
