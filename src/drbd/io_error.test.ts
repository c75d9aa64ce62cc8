/**
 * on-io-error (two devices in one process, ports 8126-8139): b is the Primary on a disk that can be made
 * to fail every request with EIO; a is its UpToDate Secondary. detach: b goes Diskless, reads come from a
 * (P_DATA_REQUEST / P_DATA_REPLY), writes go to a only, no error reaches the caller, every byte reads back;
 * call-local-io-error runs the handler; pass_on leaves b Inconsistent; without a peer the error surfaces.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { BlockDeviceError, type WriteOptions } from "../bdev/bdev.js";
import type { HandlerName, HandlerRunner } from "./handlers.js";
import type { OnIoError } from "./io_error.js";
import { eventually, ForwardingDevice, link, pattern, sharedGenerationPair } from "./test_support.js";

/** A lower device that fails every request with EIO while `failing` (a disk that died). */
class FailingDisk extends ForwardingDevice {
  failing = false;
  /** Requests take this long (a disk that stops answering; they complete late). */
  stallMs = 0;
  failedRequests = 0;

  private async check(): Promise<void> {
    if (this.stallMs > 0) await new Promise((r) => setTimeout(r, this.stallMs));
    if (this.failing) {
      this.failedRequests++;
      throw new BlockDeviceError(`${this.name}: Input/output error`, "io");
    }
  }
  override async readv(lba: number, iov: readonly Buffer[]): Promise<void> {
    await this.check();
    return this.lower.readv(lba, iov);
  }
  override async writev(lba: number, iov: readonly Buffer[], options?: WriteOptions): Promise<void> {
    await this.check();
    return this.lower.writev(lba, iov, options);
  }
  override async flush(): Promise<void> {
    await this.check();
    return this.lower.flush();
  }
  override async unmap(lba: number, blocks: number): Promise<void> {
    await this.check();
    return this.lower.unmap(lba, blocks);
  }
  override async writeZeroes(lba: number, blocks: number): Promise<void> {
    await this.check();
    return this.lower.writeZeroes(lba, blocks);
  }
}

function recordingHandlers(): HandlerRunner & { calls: HandlerName[] } {
  const calls: HandlerName[] = [];
  return {
    calls,
    configured: () => true,
    run(name) {
      calls.push(name);
      return Promise.resolve(0);
    },
  };
}

type Testing = Parameters<typeof link>[0];

/** b Primary on a FailingDisk, a its Secondary, connected, 1 MiB of pattern written through b. */
async function setUp(
  t: Testing,
  ports: [number, number],
  onIoError: OnIoError,
  connect = true,
  diskTimeoutMs = 0,
  linkExtra: Parameters<typeof link>[4] = {},
) {
  let disk: FailingDisk | undefined;
  const handlers = recordingHandlers();
  const { a, b } = await sharedGenerationPair(t, {
    sizeMiB: 8,
    wrapB: (l) => (disk = new FailingDisk(l)),
    attachB: { onIoError, handlers, diskTimeoutMs },
  });
  const ca = link(t, a, ports[0], ports[1], linkExtra);
  const cb = link(t, b, ports[1], ports[0], linkExtra);
  if (connect) {
    await ca.connect();
    await cb.connect();
    await ca.waitFor("Connected");
    await cb.waitFor("Connected");
  }
  await b.primary();
  const data = pattern(1 << 20, 3);
  await b.writev(0, [data]);
  return { a, b, ca, cb, disk: disk as FailingDisk, handlers, data };
}

const bs = 512;

test("detach: a read error makes the Primary Diskless; reads and writes are served by the peer", async (t) => {
  const { a, b, cb, disk, handlers, data } = await setUp(t, [8130, 8131], "detach");
  disk.failing = true;
  const got = Buffer.alloc(data.length);
  await b.readv(0, [got]);
  assert.ok(got.equals(data), "the failed read was retried on the peer");
  assert.ok(disk.failedRequests >= 1);
  assert.ok(await eventually(() => b.disk === "Diskless"));
  assert.equal(b.role, "Primary");
  assert.ok(await eventually(() => cb.peerDisk === "UpToDate"));
  assert.deepEqual(handlers.calls, [], "detach runs no handler");
  const failedBefore = disk.failedRequests;
  // Writes while Diskless: only the peer has them, and it marks them for the re-attach.
  const second = pattern(256 * 1024, 9);
  await b.writev(4096, [second]);
  const back = Buffer.alloc(second.length);
  await b.readv(4096, [back]);
  assert.ok(back.equals(second), "a write of the Diskless Primary reads back (from the peer)");
  await b.flush();
  assert.equal(disk.failedRequests, failedBefore, "the failed disk is not touched again");
  const onA = Buffer.alloc(second.length);
  await a.readv(4096, [onA]);
  assert.ok(onA.equals(second), "the Secondary holds the write");
  assert.ok(a.bitmap.outOfSyncKiB >= second.length / 1024, "the Secondary marked them out of sync");
  assert.notEqual(a.uuids[1], 0n, "the Secondary started a new generation (it has the only copy)");
  // Whole device readable through the peer.
  const all = Buffer.alloc(data.length);
  await b.readv(0, [all.subarray(0, 4096 * bs), all.subarray(4096 * bs)]);
  assert.ok(all.subarray(0, 4096 * bs).equals(data.subarray(0, 4096 * bs)));
});

test("detach: a write error completes good when the peer took it; the Primary goes Diskless", async (t) => {
  const { a, b, disk } = await setUp(t, [8132, 8133], "detach");
  disk.failing = true;
  const w = pattern(64 * 1024, 5);
  await b.writev(100, [w]);
  assert.ok(await eventually(() => b.disk === "Diskless"));
  const back = Buffer.alloc(w.length);
  await b.readv(100, [back]);
  assert.ok(back.equals(w));
  const onA = Buffer.alloc(w.length);
  await a.readv(100, [onA]);
  assert.ok(onA.equals(w));
});

test("call-local-io-error: the local-io-error handler runs as the disk fails", async (t) => {
  const { b, disk, handlers, data } = await setUp(t, [8134, 8135], "call-local-io-error");
  disk.failing = true;
  const got = Buffer.alloc(4096);
  await b.readv(0, [got]);
  assert.ok(got.equals(data.subarray(0, 4096)));
  assert.ok(await eventually(() => b.disk === "Diskless"));
  assert.deepEqual(handlers.calls, ["local-io-error"]);
});

test("pass_on: the disk becomes Inconsistent, the read is served by the peer", async (t) => {
  const { b, disk, data } = await setUp(t, [8136, 8137], "pass_on");
  disk.failing = true;
  const got = Buffer.alloc(4096);
  await b.readv(0, [got]);
  assert.ok(got.equals(data.subarray(0, 4096)));
  assert.ok(await eventually(() => b.disk === "Inconsistent"));
  disk.failing = false;
  // Inconsistent: reads keep going to the peer.
  const more = Buffer.alloc(4096);
  await b.readv(8, [more]);
  assert.ok(more.equals(data.subarray(8 * bs, 8 * bs + 4096)));
});

test("without a peer the error reaches the caller; detach still takes the disk away", async (t) => {
  const { b, disk } = await setUp(t, [8138, 8139], "detach", false);
  disk.failing = true;
  await assert.rejects(b.readv(0, [Buffer.alloc(4096)]), /Input\/output error/);
  assert.ok(await eventually(() => b.disk === "Diskless"));
  await assert.rejects(b.writev(0, [Buffer.alloc(4096)]), /no local disk/);
});

test("disk-timeout: a request the disk does not answer in time detaches it, even with pass_on", async (t) => {
  const { b, disk, data } = await setUp(t, [8128, 8129], "pass_on", true, 300);
  disk.stallMs = 3000;
  const started = Date.now();
  const got = Buffer.alloc(4096);
  await b.readv(0, [got]);
  assert.ok(Date.now() - started < 2500, "served by the peer after disk-timeout, not after the disk");
  assert.ok(got.equals(data.subarray(0, 4096)));
  assert.ok(await eventually(() => b.disk === "Diskless", 5000));
  const w = pattern(8192, 11);
  await b.writev(64, [w]);
  const back = Buffer.alloc(w.length);
  await b.readv(64, [back]);
  assert.ok(back.equals(w));
  // The stalled request completes late; nothing changes.
  await new Promise((r) => setTimeout(r, 3000));
  assert.equal(b.disk, "Diskless");
});

test("reads served by the peer carry the data-integrity-alg digest (P_DATA_REPLY)", async (t) => {
  const { b, disk, data } = await setUp(t, [8126, 8127], "detach", true, 0, { dataIntegrityAlg: "crc32c" });
  disk.failing = true;
  const got = Buffer.alloc(data.length);
  await b.readv(0, [got]);
  assert.ok(got.equals(data));
  assert.ok(await eventually(() => b.disk === "Diskless"));
});
