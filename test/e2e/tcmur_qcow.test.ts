/**
 * The TCMUR `qcow` handler end to end: a qcow2 image made by `qemu-img create` exported as
 * `TCMUR N name /qcow//path`, written and unmapped through iSCSI, then judged by QEMU's own tools:
 * `qemu-img check` (no corruption, no leaks) and `qemu-img compare` against a raw reference that saw
 * the same writes. Also after a kill -9 under load (acknowledged writes all there, at worst leaked
 * clusters, which the next open frees), and libiscsi's SBC suite on a qcow LUN.
 * Ports 3560-3569.
 */
import assert from "node:assert/strict";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { open, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { RawInitiator } from "../support/raw_initiator.js";
import { runSbcSuites } from "./sbc_suites.js";
import { cleanup, makeTempDir, startServer, stopCleanly, type RunningServer } from "./harness.js";
import { QcowImage } from "../../src/tcmur/qcow/image.js";

const IQN = "iqn.2016-06.io.spdk:qcow";
const PORTS: [number, number] = [3560, 3569];
const BS = 512;
const MiB = 1024 * 1024;

function config(image: string, port: number): string {
  return `[TCMUR]
  TCMUR 5 qcow_a /qcow/${image}
[PortalGroup1]
  Portal P 127.0.0.1:${port}
[InitiatorGroup1]
  InitiatorName ANY
  Netmask 127.0.0.1/32
[TargetNode1]
  TargetName ${IQN}
  Mapping PortalGroup1 InitiatorGroup1
  LUN0 qcow_a
`;
}

function rw16(opcode: 0x88 | 0x8a, lba: number, blocks: number): Buffer {
  const cdb = Buffer.alloc(16);
  cdb[0] = opcode;
  cdb.writeBigUInt64BE(BigInt(lba), 2);
  cdb.writeUInt32BE(blocks, 10);
  return cdb;
}

function unmapCommand(lba: number, blocks: number): { cdb: Buffer; data: Buffer } {
  const data = Buffer.alloc(24);
  data.writeUInt16BE(22, 0);
  data.writeUInt16BE(16, 2);
  data.writeBigUInt64BE(BigInt(lba), 8);
  data.writeUInt32BE(blocks, 16);
  const cdb = Buffer.alloc(10);
  cdb[0] = 0x42;
  cdb.writeUInt16BE(data.length, 7);
  return { cdb, data };
}

async function session(port: number, name: string): Promise<RawInitiator> {
  const ini = await RawInitiator.connect(port);
  const login = await ini.login({ targetName: IQN, initiatorName: `iqn.2024-01.test:${name}` });
  assert.equal(login.statusClass, 0, `login status ${login.statusClass}/${login.statusDetail}`);
  for (let i = 0; i < 4; i++) {
    const tur = await ini.scsi(Buffer.alloc(6));
    if (tur.status === 0) return ini;
  }
  assert.fail("unit attentions did not clear after 4 TEST UNIT READY");
}

function qemuCheck(path: string): { status: number | null; corruptions: number; leaks: number; out: string } {
  const r = spawnSync("qemu-img", ["check", "--output=json", path], { encoding: "utf8" });
  const j = JSON.parse(r.stdout || "{}") as { corruptions?: number; leaks?: number };
  return {
    status: r.status,
    corruptions: j.corruptions ?? 0,
    leaks: j.leaks ?? 0,
    out: r.stdout + r.stderr,
  };
}

function qemuCompare(raw: string, image: string): { status: number | null; out: string } {
  const r = spawnSync("qemu-img", ["compare", "-f", "raw", "-F", "qcow2", raw, image], { encoding: "utf8" });
  return { status: r.status, out: r.stdout + r.stderr };
}

async function makeImage(
  dir: string,
  name: string,
  size: number,
  opts: string[] = [],
): Promise<{ image: string; raw: string }> {
  const image = join(dir, `${name}.qcow2`);
  const raw = join(dir, `${name}.raw`);
  execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", ...opts, image, String(size)]);
  await writeFile(raw, "");
  const fh = await open(raw, "r+");
  await fh.truncate(size);
  await fh.close();
  return { image, raw };
}

describe("TCMUR qcow handler over iSCSI", () => {
  let dir: string;
  before(async () => {
    dir = await makeTempDir("qcow");
  });
  after(async () => {
    await cleanup(dir);
  });

  for (const clusterSize of [65536, 4096]) {
    it(`random writes and unmaps (${clusterSize / 1024} KiB clusters): qemu-img check clean, compare equal`, async () => {
      const size = 64 * MiB;
      const { image, raw } = await makeImage(dir, `rw${clusterSize}`, size, [
        "-o",
        `cluster_size=${clusterSize}`,
      ]);
      const server = await startServer((ports) => config(image, ports[0]), {
        dir,
        portRange: PORTS,
        args: ["--no-fuse"],
      });
      const ref = await open(raw, "r+");
      try {
        const ini = await session(server.ports[0], "rw");
        let seed = 12345;
        const next = (): number => {
          seed = (seed * 1103515245 + 12345) >>> 0;
          return seed / 0x1_0000_0000;
        };
        for (let i = 0; i < 300; i++) {
          const blocks = 1 + Math.floor(next() * 200);
          const lba = Math.floor(next() * (size / BS - blocks));
          if (next() < 0.25) {
            const { cdb, data } = unmapCommand(lba, blocks);
            const r = await ini.scsi(cdb, { write: data });
            assert.equal(r.status, 0, `UNMAP ${lba}+${blocks}: sense ${r.sense.toString("hex")}`);
            await ref.write(Buffer.alloc(blocks * BS), 0, blocks * BS, lba * BS);
          } else {
            const data = randomBytes(blocks * BS);
            const r = await ini.scsi(rw16(0x8a, lba, blocks), { write: data });
            assert.equal(r.status, 0, `WRITE ${lba}+${blocks}: sense ${r.sense.toString("hex")}`);
            await ref.write(data, 0, data.length, lba * BS);
          }
        }
        // Read back a stretch through iSCSI too.
        const r = await ini.scsi(rw16(0x88, 0, 2048), { read: 2048 * BS });
        assert.equal(r.status, 0);
        const expect = Buffer.alloc(2048 * BS);
        await ref.read(expect, 0, expect.length, 0);
        assert.ok(r.data.equals(expect), "READ(16) of the first MiB differs from the reference");
        await ini.logout();
      } finally {
        await ref.close();
        await stopCleanly(server);
      }
      const c = qemuCheck(image);
      assert.equal(c.status, 0, c.out);
      assert.equal(c.corruptions, 0, c.out);
      assert.equal(c.leaks, 0, c.out);
      const cmp = qemuCompare(raw, image);
      assert.equal(cmp.status, 0, cmp.out);
    });
  }

  it("kill -9 under load: no corruption, every acknowledged write is in the image, the next open frees any leak", async () => {
    const size = 128 * MiB;
    const loadMiB = 32; // iscsi-load's random 4 KiB QD32 writes stay in the first 32 MiB
    const { image, raw } = await makeImage(dir, "kill", size);
    const server = await startServer((ports) => config(image, ports[0]), {
      dir,
      portRange: PORTS,
      args: ["--no-fuse"],
    });
    const ref = await open(raw, "r+");
    const writers = 6;
    const region = (size / MiB - loadMiB) / writers; // MiB per writer, after the load's range
    const inFlight = new Map<number, { lba: number; data: Buffer }>();
    let killed = false;
    let acked = 0;
    const load = spawn("iscsi-load", [
      "-u",
      `iscsi://127.0.0.1:${server.ports[0]}/${IQN}/0`,
      "-o",
      "write",
      "-b",
      "4096",
      "-q",
      "32",
      "-n",
      "1",
      "-t",
      "30",
      "-r",
      "-R",
      String(loadMiB),
    ]);
    load.on("error", () => undefined);
    const writer = async (k: number): Promise<void> => {
      const ini = await session(server.ports[0], `kill${k}`);
      const base = ((loadMiB + k * region) * MiB) / BS;
      for (let i = 0; !killed; i++) {
        const blocks = 8 * (1 + (i % 32));
        const lba = base + ((i * 7919 * 8) % ((region * MiB) / BS - blocks));
        const data = randomBytes(blocks * BS);
        inFlight.set(k, { lba, data });
        const r = await ini.scsi(rw16(0x8a, lba, blocks), { write: data }).catch(() => undefined);
        if (!r || killed) return; // the connection died with the server: this write's fate is open
        assert.equal(r.status, 0);
        inFlight.delete(k);
        await ref.write(data, 0, data.length, lba * BS);
        acked++;
      }
    };
    const running = Array.from({ length: writers }, (_, k) => writer(k));
    await new Promise((resolve) => setTimeout(resolve, 3000));
    killed = true;
    server.child.kill("SIGKILL");
    await server.stop();
    await Promise.allSettled(running);
    load.kill("SIGKILL");
    assert.ok(acked > 50, `only ${acked} writes were acknowledged before the kill`);

    const afterKill = qemuCheck(image);
    assert.equal(afterKill.corruptions, 0, afterKill.out);
    process.stderr.write(`qcow kill -9: ${acked} writes acknowledged, ${afterKill.leaks} leaked clusters\n`);

    // Writes in flight at the kill are either wholly old or wholly new, per 512-byte block.
    const img = await QcowImage.open(image, { readOnly: true });
    const loadRange = Buffer.alloc(loadMiB * MiB);
    await img.readv([loadRange], 0);
    await ref.write(loadRange, 0, loadRange.length, 0);
    for (const { lba, data } of inFlight.values()) {
      const got = Buffer.alloc(data.length);
      await img.readv([got], lba * BS);
      const old = Buffer.alloc(data.length);
      await ref.read(old, 0, old.length, lba * BS);
      for (let b = 0; b < data.length; b += BS) {
        const blk = got.subarray(b, b + BS);
        assert.ok(
          blk.equals(data.subarray(b, b + BS)) || blk.equals(old.subarray(b, b + BS)),
          `LBA ${lba + b / BS}`,
        );
      }
      await ref.write(got, 0, got.length, lba * BS);
    }
    await img.close();
    await ref.close();
    const cmp = qemuCompare(raw, image);
    assert.equal(cmp.status, 0, `acknowledged writes missing after kill -9: ${cmp.out}`);

    // The next open frees what the kill leaked; a clean stop leaves a clean image.
    const again: RunningServer = await startServer((ports) => config(image, ports[0]), {
      dir,
      portRange: PORTS,
      args: ["--no-fuse"],
    });
    await stopCleanly(again);
    const c = qemuCheck(image);
    assert.equal(c.status, 0, c.out);
    assert.equal(c.leaks, 0, c.out);
    assert.equal(qemuCompare(raw, image).status, 0);
  });

  it("iscsi-test-cu SBC suites on a qcow LUN: 0 failed", { timeout: 15 * 60 * 1000 }, async () => {
    const { image } = await makeImage(dir, "sbc", 64 * MiB);
    const server = await startServer((ports) => config(image, ports[0]), {
      dir,
      portRange: PORTS,
      args: ["--no-fuse"],
    });
    let sbc;
    try {
      sbc = await runSbcSuites(`iscsi://127.0.0.1:${server.ports[0]}/${IQN}/0`);
    } finally {
      await stopCleanly(server);
    }
    const { tests, failed, passed, output } = sbc;
    process.stderr.write(`qcow SBC: ${passed} passed, ${failed.length} failed of ${tests.length}\n`);
    assert.ok(tests.length > 50, `only ${tests.length} tests ran:\n${output.slice(-2000)}`);
    assert.deepEqual(failed, [], output.slice(-4000));
    const c = qemuCheck(image);
    assert.equal(c.status, 0, c.out);
  });
});
