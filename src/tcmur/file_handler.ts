/**
 * tcmu-runner's `file` handler: the device is a regular file, created when absent. Size: the
 * cfgstring's `size=`, else the existing file's size, else the 1 GiB default; a file shorter than the
 * device is extended (sparse), so reads of never-written blocks return zeroes.
 */
import { open, type FileHandle } from "node:fs/promises";
import { constants } from "node:fs";
import { DEFAULT_SIZE_BYTES, type TcmurDeviceBackend, type TcmurHandler } from "./handler.js";

const ZERO_CHUNK = Buffer.alloc(1024 * 1024);

class FileBackend implements TcmurDeviceBackend {
  readonly volatileWriteCache = true; // writes land in the page cache until datasync
  private fh: FileHandle | undefined;

  constructor(
    private readonly label: string,
    fh: FileHandle,
    readonly sizeBytes: number,
    readonly blockSize: number,
    readonly readOnly: boolean,
  ) {
    this.fh = fh;
  }

  private handle(): FileHandle {
    if (!this.fh) throw new Error(`${this.label}: device is closed`);
    return this.fh;
  }

  async readv(iov: readonly Buffer[], offset: number): Promise<void> {
    const fh = this.handle();
    // readv may return short (signals, EOF of a file truncated behind our back): finish the rest.
    let remaining = iov.slice();
    let pos = offset;
    while (remaining.length > 0) {
      const { bytesRead } = await fh.readv(remaining, pos);
      if (bytesRead === 0) {
        for (const b of remaining) b.fill(0);
        return;
      }
      pos += bytesRead;
      remaining = advance(remaining, bytesRead);
    }
  }

  async writev(iov: readonly Buffer[], offset: number): Promise<void> {
    const fh = this.handle();
    let remaining = iov.slice();
    let pos = offset;
    while (remaining.length > 0) {
      const { bytesWritten } = await fh.writev(remaining, pos);
      if (bytesWritten === 0) throw new Error(`${this.label}: write at ${pos} made no progress`);
      pos += bytesWritten;
      remaining = advance(remaining, bytesWritten);
    }
  }

  async flush(): Promise<void> {
    await this.handle().datasync();
  }

  async discard(offset: number, length: number): Promise<void> {
    // Node has no fallocate(PUNCH_HOLE); write zeroes so the range reads back as zeroes.
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const n = Math.min(ZERO_CHUNK.length, end - pos);
      await this.writev([ZERO_CHUNK.subarray(0, n)], pos);
      pos += n;
    }
  }

  async close(): Promise<void> {
    const fh = this.fh;
    this.fh = undefined;
    if (fh) {
      if (!this.readOnly) await fh.datasync();
      await fh.close();
    }
  }
}

/** Drop the first `n` bytes of an I/O vector (subarrays, no copies). */
function advance(iov: Buffer[], n: number): Buffer[] {
  let i = 0;
  while (i < iov.length && n >= iov[i].length) n -= iov[i++].length;
  const rest = iov.slice(i);
  if (n > 0 && rest.length > 0) rest[0] = rest[0].subarray(n);
  return rest;
}

export const fileHandler: TcmurHandler = {
  name: "file",
  productName: "TCMU file",
  async open(req) {
    const label = `TCMUR ${req.name} (${req.cfg.raw})`;
    if (!req.cfg.path.startsWith("/")) {
      throw new Error(
        `${label}: the file handler needs an absolute path after "/file/", e.g. /file//tmp/disk0`,
      );
    }
    const flags = req.cfg.readOnly ? constants.O_RDONLY : constants.O_RDWR | constants.O_CREAT;
    let fh: FileHandle;
    try {
      fh = await open(req.cfg.path, flags, 0o600);
    } catch (err) {
      throw new Error(`${label}: cannot open ${req.cfg.path}: ${(err as Error).message}`, { cause: err });
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw new Error(`${label}: ${req.cfg.path} is not a regular file`);
      const blockSize = req.blockSize;
      let size = req.sizeBytes ?? (st.size > 0 ? st.size - (st.size % blockSize) : DEFAULT_SIZE_BYTES);
      if (size < blockSize) throw new Error(`${label}: file ${req.cfg.path} is smaller than one block`);
      size -= size % blockSize;
      if (st.size < size) {
        if (req.cfg.readOnly)
          throw new Error(`${label}: read-only file is shorter (${st.size}) than size ${size}`);
        await fh.truncate(size);
      }
      return new FileBackend(label, fh, size, blockSize, req.cfg.readOnly);
    } catch (err) {
      await fh.close();
      throw err;
    }
  },
};
