/**
 * tcmu-runner's `qcow` handler: `/qcow/<path>` serves a qcow2 image (as `qemu-img create -f qcow2`
 * makes it) read-write, with its backing chain read-only. The device size is the image's virtual
 * size; the block size is 512 (what QEMU shows a guest) unless the cfgstring says `bs=`.
 */
import type { TcmurDeviceBackend, TcmurHandler } from "../handler.js";
import { QcowImage } from "./image.js";

const QCOW_DEFAULT_BLOCK_SIZE = 512;

class QcowBackend implements TcmurDeviceBackend {
  /** Writes sit in the page cache (and L2 updates are ordered, not synced) until flush. */
  readonly volatileWriteCache = true;
  readonly sizeBytes: number;
  readonly readOnly: boolean;

  constructor(
    private readonly image: QcowImage,
    readonly blockSize: number,
  ) {
    this.sizeBytes = image.sizeBytes;
    this.readOnly = image.readOnly;
  }

  readv(iov: readonly Buffer[], offset: number): Promise<void> {
    return this.image.readv(iov, offset);
  }
  writev(iov: readonly Buffer[], offset: number): Promise<void> {
    return this.image.writev(iov, offset);
  }
  flush(): Promise<void> {
    return this.image.flush();
  }
  discard(offset: number, length: number): Promise<void> {
    return this.image.discard(offset, length);
  }
  close(): Promise<void> {
    return this.image.close();
  }
}

export const qcowHandler: TcmurHandler = {
  name: "qcow",
  productName: "TCMU qcow",
  async open(req) {
    const label = `TCMUR ${req.name} (${req.cfg.raw})`;
    if (!req.cfg.path.startsWith("/")) {
      throw new Error(
        `${label}: the qcow handler needs an absolute path after "/qcow/", e.g. /qcow//images/vm.qcow2`,
      );
    }
    const image = await QcowImage.open(req.cfg.path, { readOnly: req.cfg.readOnly, where: label });
    const blockSize = req.cfg.blockSize ?? QCOW_DEFAULT_BLOCK_SIZE;
    const problem =
      image.sizeBytes % blockSize !== 0
        ? `the image's size ${image.sizeBytes} is not a multiple of bs ${blockSize}`
        : req.sizeBytes !== undefined && req.sizeBytes !== image.sizeBytes
          ? `size=${req.sizeBytes} differs from the image's virtual size ${image.sizeBytes} (resize it with qemu-img resize)`
          : undefined;
    if (problem) {
      await image.close();
      throw new Error(`${label}: ${problem}`);
    }
    return new QcowBackend(image, blockSize);
  },
};
