/**
 * A DRBD resource of two volumes between two `usertgt serve` nodes (drbd_fixture.ts with volumes 2): r0's
 * volume 0 is drbd2 on file_b (LUN0), volume 1 is drbd3 on file_c (LUN1), one connection for both. Each
 * volume's writes reach its own backing file on the peer; a reconnect after writes to one volume resyncs
 * that volume only; a kill -9 of the Primary during writes to both loses no acknowledged write on either.
 *
 * Ports: DRBD 8230-8249, iSCSI 3760-3779.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { open } from "node:fs/promises";
import { blockPattern, DrbdPair, rw10, until } from "./drbd_fixture.js";
import { runCli } from "./harness.js";
import type { RawInitiator } from "../support/raw_initiator.js";

const PORTS = { drbdPorts: [8230, 8249] as const, iscsiPorts: [3760, 3779] as const };

async function readFile(path: string, offset: number, bytes: number): Promise<Buffer> {
  const fh = await open(path, "r");
  try {
    const b = Buffer.alloc(bytes);
    await fh.read(b, 0, bytes, offset);
    return b;
  } finally {
    await fh.close();
  }
}

/** The session's power-on unit attention of LUN1 (the fixture's session clears LUN0's). */
async function clearUnitAttention(ini: RawInitiator, lun: number): Promise<void> {
  for (let i = 0; i < 4; i++) if ((await ini.scsi(Buffer.alloc(6), { lun })).status === 0) return;
  assert.fail(`LUN${lun}: unit attentions did not clear`);
}

async function write(ini: RawInitiator, lun: number, lba: number, data: Buffer, bs: number): Promise<void> {
  const r = await ini.scsi(rw10(0x2a, lba, data.length / bs), { write: data, lun });
  assert.equal(r.status, 0, `WRITE(10) LUN${lun} at ${lba}: ${r.sense.toString("hex")}`);
}

/** Both volumes Established and UpToDate on both nodes (drbdadm status text). */
async function waitBothVolumesInSync(pair: DrbdPair, ms = 60000): Promise<void> {
  const want =
    /volume:0 disk:UpToDate\n {2}volume:1 disk:UpToDate\n {2}peer role:\w+\n {4}volume:0 replication:Established peer-disk:UpToDate\n {4}volume:1 replication:Established peer-disk:UpToDate/;
  await until(
    "both volumes Established and UpToDate on both nodes",
    async () => want.test(await pair.statusText("alpha")) && want.test(await pair.statusText("beta")),
    ms,
    async () => `alpha:\n${await pair.statusText("alpha")}beta:\n${await pair.statusText("beta")}`,
  );
}

/** The "resync done" log lines a node wrote for a minor: their transferredBlocks. */
function resyncedBlocks(pair: DrbdPair, node: "alpha" | "beta", device: string): number[] {
  return pair
    .stderr(node)
    .split("\n")
    .filter((l) => l.includes('"msg":"resync done"') && l.includes(`"device":"${device}"`))
    .map((l) => (JSON.parse(l) as { transferredBlocks: number }).transferredBlocks);
}

describe("DRBD resource of two volumes between two usertgt nodes", () => {
  let pair: DrbdPair;
  before(async () => {
    pair = await DrbdPair.create("drbd-volumes", { ...PORTS, volumes: 2, sizeMiB: 16 });
    // One after the other: the fixture writes each node's usertgt.conf to the same place.
    await pair.start("alpha", "drbdadm_up_primary");
    await pair.start("beta", "drbdadm_up");
    await waitBothVolumesInSync(pair);
  });
  after(async () => {
    await pair.close();
  });

  test("each volume's writes land on its own backing file on the peer; a reconnect resyncs only the volume written", async () => {
    const bs = pair.blockSize;
    const status = await pair.statusText("alpha");
    assert.match(status, /^r0 role:Primary\n/);
    // drbd_status JSON: volume 0 at the top, each volume under `volumes` with its own minor and backing.
    const json = (await pair.rpcCall("alpha", "drbd_status", { resource: "r0" })) as {
      resources: { device: string; volumes: { volume: number; device: string; disk: string }[] }[];
    };
    assert.equal(json.resources[0]?.device, "drbd2");
    assert.deepEqual(
      json.resources[0]?.volumes.map((v) => [v.volume, v.device, v.disk]),
      [
        [0, "drbd2", "UpToDate"],
        [1, "drbd3", "UpToDate"],
      ],
    );
    // drbd-utils 9's verbose status and events2 name each volume with its minor.
    const verbose = await runCli(
      ["drbdadm", "-s", pair.nodes.alpha.sock, "status", "r0", "--verbose"],
      60000,
    );
    assert.equal(verbose.code, 0, verbose.stderr);
    assert.match(
      verbose.stdout,
      /^ {2}volume:0 minor:2 disk:UpToDate quorum:yes\n {2}volume:1 minor:3 disk:UpToDate/m,
    );
    assert.match(
      verbose.stdout,
      /^ {4}volume:1 replication:Established peer-disk:UpToDate resync-suspended:no$/m,
    );
    const events = await runCli(["drbdsetup", "-s", pair.nodes.alpha.sock, "events2", "r0", "--now"], 60000);
    assert.equal(events.code, 0, events.stderr);
    assert.match(events.stdout, /^exists device name:r0 volume:1 minor:3 disk:UpToDate/m);
    assert.match(
      events.stdout,
      /^exists peer-device name:r0 peer-node-id:1 conn-name:beta volume:1 replication:Established/m,
    );
    const ini = await pair.session("alpha");
    try {
      await clearUnitAttention(ini, 1);
      const d0 = Buffer.alloc(16 * bs, 0xa0);
      const d1 = Buffer.alloc(16 * bs, 0xb1);
      await write(ini, 0, 100, d0, bs);
      await write(ini, 1, 100, d1, bs);
      // Protocol C: acknowledged means on the peer's disk.
      assert.deepEqual(await readFile(pair.nodes.beta.file, 100 * bs, d0.length), d0);
      assert.deepEqual(await readFile(pair.nodes.beta.file1, 100 * bs, d1.length), d1);
      // Beta goes away; writes to volume 1 only; beta comes back.
      await pair.admOk("beta", "disconnect");
      const d2 = Buffer.alloc(32 * bs, 0xc2);
      await write(ini, 1, 1000, d2, bs);
      const before2 = resyncedBlocks(pair, "beta", "drbd2").length;
      const before3 = resyncedBlocks(pair, "beta", "drbd3").length;
      await pair.admOk("beta", "connect");
      await waitBothVolumesInSync(pair);
      const r2 = resyncedBlocks(pair, "beta", "drbd2").slice(before2);
      const r3 = resyncedBlocks(pair, "beta", "drbd3").slice(before3);
      assert.ok(
        r2.every((n) => n === 0),
        `volume 0 resynced nothing: ${r2.join(",")}`,
      );
      assert.deepEqual(r3, [32], "volume 1 resynced its 32 blocks");
      assert.deepEqual(await readFile(pair.nodes.beta.file1, 1000 * bs, d2.length), d2);
      assert.deepEqual(await readFile(pair.nodes.beta.file, 1000 * bs, d2.length), Buffer.alloc(d2.length));
      // RES/VOL: `drbdadm invalidate r0/1` on the Secondary: a full resync of volume 1 alone, agreed with
      // the peer through a P_STATE_CHG_REQ of that volume (drbdadm detach r0/1 is refused here: a LUN holds it).
      const adm = (...args: string[]) => runCli(["drbdadm", "-s", pair.nodes.beta.sock, ...args], 60000);
      const unknown = await adm("invalidate", "r0/7");
      assert.notEqual(unknown.code, 0);
      assert.match(unknown.stderr, /resource r0 has no volume 7; volumes: 0, 1/);
      const held = await adm("detach", "r0/1");
      assert.match(
        held.stderr,
        /drbd3: State change failed: \(-12\) Device is held open by someone \(BIO bio2\)/,
      );
      const n2 = resyncedBlocks(pair, "beta", "drbd2").length;
      const n3 = resyncedBlocks(pair, "beta", "drbd3").length;
      const invalidated = await adm("invalidate", "r0/1");
      assert.equal(invalidated.code, 0, invalidated.stderr);
      await until("volume 1's full resync", async () => resyncedBlocks(pair, "beta", "drbd3").length > n3);
      await waitBothVolumesInSync(pair);
      assert.equal(resyncedBlocks(pair, "beta", "drbd2").length, n2, "volume 0 was not resynced");
      const full = resyncedBlocks(pair, "beta", "drbd3").slice(n3);
      assert.ok((full[0] ?? 0) > 4000, `volume 1 resynced in full: ${full.join(",")} blocks`);
      assert.deepEqual(await readFile(pair.nodes.beta.file1, 1000 * bs, d2.length), d2);
    } finally {
      ini.close();
    }
  });

  test("kill -9 of the Primary during writes to both volumes: every acknowledged write is on the Secondary", async () => {
    const bs = pair.blockSize;
    // One writer per volume, each writing runs of 4 blocks at rising LBAs and recording what was acked.
    const acked: { lun: number; lba: number; counter: number }[] = [];
    let stop = false;
    const writer = async (lun: number, tag: number) => {
      const ini = await pair.session("alpha", tag);
      try {
        await clearUnitAttention(ini, lun);
        for (let counter = 1; !stop; counter++) {
          const lba = 2000 + ((counter * 4) % 1500);
          const data = Buffer.concat([0, 1, 2, 3].map((i) => blockPattern(bs, lba + i, lun, counter)));
          const r = await ini.scsi(rw10(0x2a, lba, 4), { write: data, lun }).catch(() => undefined);
          if (!r || r.status !== 0) return;
          acked.push({ lun, lba, counter });
        }
      } finally {
        ini.close();
      }
    };
    const loops = [writer(0, 20), writer(1, 21)];
    await until("writes acknowledged on both volumes", async () => {
      const luns = new Set(acked.map((a) => a.lun));
      return luns.size === 2 && acked.length > 200;
    });
    await pair.kill("alpha");
    stop = true;
    await Promise.all(loops);
    // The last acknowledged write of each block must be on the peer's backing file of its volume.
    const last = new Map<string, { lun: number; lba: number; counter: number }>();
    for (const a of acked) last.set(`${a.lun}:${a.lba}`, a);
    for (const a of last.values()) {
      const file = a.lun === 0 ? pair.nodes.beta.file : pair.nodes.beta.file1;
      const got = await readFile(file, a.lba * bs, 4 * bs);
      for (let i = 0; i < 4; i++) {
        const want = blockPattern(bs, a.lba + i, a.lun, a.counter);
        const block = got.subarray(i * bs, (i + 1) * bs);
        // A later write to the block may have reached the peer without its ack reaching us: same writer, higher counter.
        if (!block.equals(want)) {
          const counter = block.readUInt32BE(12);
          assert.ok(
            block.readUInt32BE(8) === a.lun && counter > a.counter,
            `volume ${a.lun} LBA ${a.lba + i}: acked counter ${a.counter}, peer has writer ${block.readUInt32BE(8)} counter ${counter}`,
          );
        }
      }
    }
    assert.ok(acked.filter((a) => a.lun === 1).length > 50, "volume 1 took writes");
  });
});
