/**
 * tcmu-runner's `ram` handler: the device lives in memory, lost at exit. Memory is taken in 1 MiB
 * chunks on first write, so the six 1 GiB devices of the reference config cost only what is written; never-written and
 * discarded chunks read as zeroes.
 */
import { DEFAULT_SIZE_BYTES, type TcmurDeviceBackend, type TcmurHandler } from "./handler.js";

const CHUNK = 1024 * 1024;

class RamBackend implements TcmurDeviceBackend {
  readonly volatileWriteCache = false;
  private chunks: (Buffer | undefined)[] | undefined;

  constructor(
    private readonly label: string,
    readonly sizeBytes: number,
    readonly blockSize: number,
    readonly readOnly: boolean,
  ) {
    this.chunks = new Array<Buffer | undefined>(Math.ceil(sizeBytes / CHUNK));
  }

  private store(): (Buffer | undefined)[] {
    if (!this.chunks) throw new Error(`${this.label}: device is closed`);
    return this.chunks;
  }

  /** Visit the chunk pieces covering [offset, offset+len). */
  private each(
    offset: number,
    len: number,
    fn: (index: number, at: number, n: number, done: number) => void,
  ): void {
    let done = 0;
    while (done < len) {
      const pos = offset + done;
      const index = Math.floor(pos / CHUNK);
      const at = pos % CHUNK;
      const n = Math.min(CHUNK - at, len - done);
      fn(index, at, n, done);
      done += n;
    }
  }

  async readv(iov: readonly Buffer[], offset: number): Promise<void> {
    const chunks = this.store();
    let pos = offset;
    for (const b of iov) {
      this.each(pos, b.length, (i, at, n, done) => {
        const c = chunks[i];
        if (c) c.copy(b, done, at, at + n);
        else b.fill(0, done, done + n);
      });
      pos += b.length;
    }
  }

  async writev(iov: readonly Buffer[], offset: number): Promise<void> {
    const chunks = this.store();
    let pos = offset;
    for (const b of iov) {
      this.each(pos, b.length, (i, at, n, done) => {
        let c = chunks[i];
        if (!c) {
          const len = Math.min(CHUNK, this.sizeBytes - i * CHUNK);
          // A write covering the whole chunk overwrites every byte: no need to zero it first.
          c = chunks[i] = at === 0 && n === len ? Buffer.allocUnsafe(len) : Buffer.alloc(len);
        }
        b.copy(c, at, done, done + n);
      });
      pos += b.length;
    }
  }

  async flush(): Promise<void> {
    this.store();
  }

  async discard(offset: number, length: number): Promise<void> {
    const chunks = this.store();
    this.each(offset, length, (i, at, n) => {
      const c = chunks[i];
      if (!c) return;
      if (n === c.length) chunks[i] = undefined;
      else c.fill(0, at, at + n);
    });
  }

  async close(): Promise<void> {
    this.chunks = undefined;
  }
}

export const ramHandler: TcmurHandler = {
  name: "ram",
  productName: "TCMU ram",
  async open(req) {
    const blockSize = req.blockSize;
    const size = req.sizeBytes ?? DEFAULT_SIZE_BYTES;
    const label = `TCMUR ${req.name} (${req.cfg.raw})`;
    if (size < blockSize || size % blockSize !== 0) {
      throw new Error(`${label}: size ${size} is not a positive multiple of the block size ${blockSize}`);
    }
    return new RamBackend(label, size, blockSize, req.cfg.readOnly);
  },
};
