/**
 * The TCMUR `file` handler over a block device (a loop device with 4096-byte sectors): the device's
 * size and block size, `bs=` smaller than the device's refused, data and discards on the device itself
 * (read with dd iflag=direct).
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  attachLoop,
  canUseLoopDevices,
  readDirect,
  type LoopDevice,
} from "../../test/support/loop_device.js";
import { parseCfgstring } from "./cfgstring.js";
import { DEFAULT_BLOCK_SIZE } from "./handler.js";
import { fileHandler } from "./file_handler.js";

const SIZE = 16 * 1024 * 1024;
const skip = await canUseLoopDevices();

function openRequest(cfgstring: string) {
  const cfg = parseCfgstring(cfgstring);
  return {
    minor: 7,
    name: "blk",
    cfg,
    sizeBytes: cfg.sizeBytes,
    blockSize: cfg.blockSize ?? DEFAULT_BLOCK_SIZE,
  };
}

describe("TCMUR file handler on a block device", { skip }, () => {
  let dir: string;
  let loop: LoopDevice;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "usertgt-tcmur-blk-"));
    loop = await attachLoop(join(dir, "loop.img"), SIZE, 4096);
  });
  after(async () => {
    await loop.detach();
    await rm(dir, { recursive: true, force: true });
  });

  it("takes the device's size and block size; writes and discards reach the device", async () => {
    const b = await fileHandler.open(openRequest(`/file/${loop.device}`));
    try {
      assert.equal(b.sizeBytes, SIZE);
      assert.equal(b.blockSize, 4096);
      const data = Buffer.alloc(8192, 0x5a);
      await b.writev([data], 65536);
      await b.flush();
      assert.deepEqual(await readDirect(loop.device, 65536, 8192, 4096), data);
      assert.ok(b.discard, "a loop device discards");
      await b.discard(65536, 8192);
      assert.deepEqual(await readDirect(loop.device, 65536, 8192, 4096), Buffer.alloc(8192));
    } finally {
      await b.close();
    }
  });

  it("refuses bs smaller than the device's and a size beyond it", async () => {
    await assert.rejects(
      fileHandler.open(openRequest(`/file/${loop.device}?bs=512`)),
      /bs 512 is smaller than the device's logical block size 4096/,
    );
    await assert.rejects(
      fileHandler.open(openRequest(`/file/${loop.device}?size=1G`)),
      /larger than the device/,
    );
  });
});
