/** Block device failures become the right sense data; WRITE AND VERIFY catches a device that loses writes. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { BlockDeviceError, type BlockDevice, type WriteOptions } from "../../src/bdev/bdev.js";
import { MallocBdev } from "../../src/bdev/malloc/malloc.js";
import { ScsiDevice } from "../../src/scsi/device.js";
import { cdb10, clearUa, run, senseOf } from "./helpers.js";

/** A Malloc disk whose reads or writes can be made to fail or to lie. */
class FaultyBdev extends MallocBdev implements BlockDevice {
  readFault: BlockDeviceError["kind"] | undefined;
  writeFault: BlockDeviceError["kind"] | undefined;
  /** Flip the first byte of every read (a device that silently corrupts). */
  corruptReads = false;

  override async readv(lba: number, iov: readonly Buffer[]): Promise<void> {
    if (this.readFault) throw new BlockDeviceError(`${this.name}: injected read fault`, this.readFault);
    await super.readv(lba, iov);
    if (this.corruptReads && iov[0].length > 0) iov[0][0] ^= 0xff;
  }

  override async writev(lba: number, iov: readonly Buffer[], _o?: WriteOptions): Promise<void> {
    if (this.writeFault) throw new BlockDeviceError(`${this.name}: injected write fault`, this.writeFault);
    await super.writev(lba, iov);
  }
}

function setup(): { dev: ScsiDevice; bdev: FaultyBdev } {
  const bdev = new FaultyBdev({ name: "Faulty0", blockSize: 512, blockCount: 64 });
  return { dev: new ScsiDevice({ name: "iqn.2026-01.test:faulty", luns: [{ id: 0, bdev }] }), bdev };
}

describe("block device errors", () => {
  it("medium, read-only, closed and I/O faults map to MEDIUM ERROR, WRITE PROTECTED, NOT READY, HARDWARE ERROR", async () => {
    const { dev, bdev } = setup();
    await clearUa(dev);
    bdev.readFault = "medium";
    assert.deepEqual(senseOf(await run(dev, cdb10(0x28, 0, 1))), { key: 0x3, asc: 0x11, ascq: 0 });
    bdev.readFault = undefined;
    bdev.writeFault = "medium";
    const w = () => run(dev, cdb10(0x2a, 0, 1), { dataOut: Buffer.alloc(512, 1) });
    assert.deepEqual(senseOf(await w()), { key: 0x3, asc: 0x0c, ascq: 0 });
    bdev.writeFault = "read-only";
    assert.deepEqual(senseOf(await w()), { key: 0x7, asc: 0x27, ascq: 0 });
    bdev.writeFault = "closed";
    assert.deepEqual(senseOf(await w()), { key: 0x2, asc: 0x04, ascq: 0 });
    bdev.writeFault = "io";
    assert.deepEqual(senseOf(await w()), { key: 0x4, asc: 0x44, ascq: 0 });
    bdev.writeFault = undefined;
    assert.equal((await w()).status, 0);
  });

  it("WRITE AND VERIFY passes on a sound device and fails on one that corrupts data", async () => {
    const { dev, bdev } = setup();
    await clearUa(dev);
    const data = Buffer.alloc(1024, 0x5a);
    assert.equal((await run(dev, cdb10(0x2e, 4, 2, 0x02), { dataOut: data })).status, 0);
    bdev.corruptReads = true;
    const bytchk = await run(dev, cdb10(0x2e, 4, 2, 0x02), { dataOut: data });
    assert.deepEqual(senseOf(bytchk), { key: 0xe, asc: 0x1d, ascq: 0 });
    const medium = await run(dev, cdb10(0x2e, 4, 2), { dataOut: data });
    assert.deepEqual(senseOf(medium), { key: 0x3, asc: 0x11, ascq: 0 });
  });
});
