import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ITNexus, ScsiTask } from "./task.js";
import { ASC, SenseError, SenseKey, type AscAscq } from "./sense.js";
import { ReservationConflict, Reservations, type ReservationHooks } from "./reservations.js";
import { encodeIscsiTransportId } from "./scsi_pr.js";

const TARGET = "iqn.2016-06.io.spdk:disk1";
const I1 = new ITNexus("iqn.1994-05.com.example:init1", "400001370000", TARGET, 1);
const I2 = new ITNexus("iqn.1994-05.com.example:init2", "400001370001", TARGET, 1);
const I3 = new ITNexus("iqn.1994-05.com.example:init3", "400001370002", TARGET, 1);

const WE = 1;
const EA = 3;
const WE_RO = 5;
const EA_RO = 6;
const WE_AR = 7;
const EA_AR = 8;
const ALL_TYPES = [WE, EA, WE_RO, EA_RO, WE_AR, EA_AR];

class RecordingHooks implements ReservationHooks {
  uas: { keys: string[]; asc: AscAscq }[] = [];
  aborted: string[][] = [];
  unitAttention(nexusKeys: readonly string[], asc: AscAscq): void {
    this.uas.push({ keys: [...nexusKeys], asc });
  }
  abortTasksOf(nexusKeys: readonly string[]): void {
    this.aborted.push([...nexusKeys]);
  }
  uasFor(nexus: ITNexus): AscAscq[] {
    return this.uas.filter((u) => u.keys.includes(nexus.key)).map((u) => u.asc);
  }
}

function setup(aptplFile?: string): { pr: Reservations; hooks: RecordingHooks } {
  const hooks = new RecordingHooks();
  return { pr: new Reservations({ lunName: "LUN0", aptplFile, hooks }), hooks };
}

function prinCdb(action: number, alloc = 8192): Buffer {
  const cdb = Buffer.alloc(10);
  cdb[0] = 0x5e;
  cdb[1] = action;
  cdb.writeUInt16BE(alloc, 7);
  return cdb;
}

async function prin(pr: Reservations, nexus: ITNexus, action: number, alloc = 8192): Promise<Buffer> {
  const task = new ScsiTask(prinCdb(action, alloc), 0, 1, "simple", nexus, alloc, true, false, []);
  await pr.persistentReserveIn(task);
  assert.equal(task.transferLength, task.dataInLength);
  return Buffer.concat(task.dataIn);
}

interface ProutArgs {
  rk?: bigint;
  sark?: bigint;
  type?: number;
  scope?: number;
  aptpl?: boolean;
  allTgPt?: boolean;
  specIPt?: Buffer[];
  list?: Buffer;
  length?: number;
}

async function prout(pr: Reservations, nexus: ITNexus, action: number, a: ProutArgs = {}): Promise<void> {
  let list = a.list;
  if (!list) {
    list = Buffer.alloc(24);
    list.writeBigUInt64BE(a.rk ?? 0n, 0);
    list.writeBigUInt64BE(a.sark ?? 0n, 8);
    list[20] = (a.specIPt ? 0x08 : 0) | (a.allTgPt ? 0x04 : 0) | (a.aptpl ? 0x01 : 0);
    if (a.specIPt) {
      const tids = Buffer.concat(a.specIPt);
      const len = Buffer.alloc(4);
      len.writeUInt32BE(tids.length);
      list = Buffer.concat([list, len, tids]);
    }
  }
  const cdb = Buffer.alloc(10);
  cdb[0] = 0x5f;
  cdb[1] = action;
  cdb[2] = ((a.scope ?? 0) << 4) | (a.type ?? 0);
  cdb.writeUInt32BE(a.length ?? list.length, 5);
  const task = new ScsiTask(cdb, 0, 2, "simple", nexus, list.length, false, true, [list]);
  await pr.persistentReserveOut(task);
}

const register = (pr: Reservations, n: ITNexus, key: bigint, more: ProutArgs = {}) =>
  prout(pr, n, 0x06, { sark: key, ...more });
const reserve = (pr: Reservations, n: ITNexus, key: bigint, type: number) =>
  prout(pr, n, 0x01, { rk: key, type });
const releasePr = (pr: Reservations, n: ITNexus, key: bigint, type: number) =>
  prout(pr, n, 0x02, { rk: key, type });

function readKeys(buf: Buffer): { gen: number; keys: bigint[] } {
  const keys: bigint[] = [];
  for (let off = 8; off + 8 <= buf.length; off += 8) keys.push(buf.readBigUInt64BE(off));
  return { gen: buf.readUInt32BE(0), keys };
}

async function readReservation(
  pr: Reservations,
  n: ITNexus,
): Promise<{ key: bigint; type: number } | undefined> {
  const buf = await prin(pr, n, 0x01);
  if (buf.readUInt32BE(4) === 0) return undefined;
  return { key: buf.readBigUInt64BE(8), type: buf[21] & 0x0f };
}

const READ10 = Buffer.from([0x28, 0, 0, 0, 0, 1, 0, 0, 1, 0]);
const WRITE10 = Buffer.from([0x2a, 0, 0, 0, 0, 1, 0, 0, 1, 0]);

function isSense(key: SenseKey, asc: AscAscq) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof SenseError, `expected SenseError, got ${String(err)}`);
    assert.equal(err.key, key);
    assert.deepEqual(err.asc, asc);
    return true;
  };
}

test("PR IN READ KEYS: empty list, then registered keys; ADDITIONAL LENGTH survives truncation", async () => {
  const { pr } = setup();
  let rk = readKeys(await prin(pr, I1, 0x00));
  assert.equal(rk.gen, 0);
  assert.deepEqual(rk.keys, []);
  await register(pr, I1, 0x1111n);
  await register(pr, I2, 0x2222n);
  rk = readKeys(await prin(pr, I1, 0x00));
  assert.equal(rk.gen, 2);
  assert.deepEqual(rk.keys, [0x1111n, 0x2222n]);
  const truncated = await prin(pr, I1, 0x00, 8);
  assert.equal(truncated.length, 8);
  assert.equal(truncated.readUInt32BE(4), 16);
});

test("PR IN: service actions 4..0x1f are INVALID FIELD IN CDB", async () => {
  const { pr } = setup();
  for (let sa = 0; sa < 4; sa++) await prin(pr, I1, sa);
  for (let sa = 4; sa < 0x20; sa++) {
    await assert.rejects(prin(pr, I1, sa), isSense(SenseKey.IllegalRequest, ASC.INVALID_FIELD_IN_CDB));
  }
});

test("PR IN REPORT CAPABILITIES: length 8, CRH/SIP_C/ATP_C, all six types, PTPL_C only with a file", async () => {
  const { pr } = setup();
  const caps = await prin(pr, I1, 0x02);
  assert.equal(caps.readUInt16BE(0), 8);
  assert.equal(caps[2], 0x10 | 0x08 | 0x04);
  assert.equal(caps[3] & 0x80, 0x80); // TMV
  assert.ok(((caps[3] >> 4) & 7) <= 5);
  assert.equal(caps.readUInt16BE(4), 0xea01);
  const dir = await mkdtemp(join(tmpdir(), "usertgt-pr-"));
  try {
    const withFile = setup(join(dir, "pr.json")).pr;
    assert.equal((await prin(withFile, I1, 0x02))[2] & 0x01, 1);
  } finally {
    await rm(dir, { recursive: true });
  }
});

test("PR OUT REGISTER: re-register with a wrong key conflicts, SARK 0 unregisters, generation counts", async () => {
  const { pr } = setup();
  await prout(pr, I1, 0x00, { sark: 0xabcn });
  // REGISTER from a registered nexus with RESERVATION KEY 0 (not its key) conflicts.
  await assert.rejects(prout(pr, I1, 0x00, { sark: 0xabdn }), ReservationConflict);
  // An unregistered nexus naming a reservation key conflicts too.
  await assert.rejects(prout(pr, I2, 0x00, { rk: 5n, sark: 6n }), ReservationConflict);
  await prout(pr, I1, 0x00, { rk: 0xabcn, sark: 0xaben });
  assert.deepEqual(readKeys(await prin(pr, I1, 0x00)).keys, [0xaben]);
  await prout(pr, I1, 0x00, { rk: 0xaben, sark: 0n });
  const rk = readKeys(await prin(pr, I1, 0x00));
  assert.deepEqual(rk.keys, []);
  assert.equal(rk.gen, 3);
  // Unregistered nexus, SARK 0: GOOD and no generation change.
  await prout(pr, I1, 0x00, { sark: 0n });
  assert.equal(readKeys(await prin(pr, I1, 0x00)).gen, 3);
});

test("PR OUT RESERVE/RELEASE: each type reads back with its key (0 for all-registrants), no generation bump", async () => {
  const { pr } = setup();
  await register(pr, I1, 0x77n);
  for (const type of ALL_TYPES) {
    await reserve(pr, I1, 0x77n, type);
    assert.deepEqual(await readReservation(pr, I1), { key: type >= WE_AR ? 0n : 0x77n, type });
    // Same type again is a no-op; a different type conflicts.
    await reserve(pr, I1, 0x77n, type);
    await assert.rejects(reserve(pr, I1, 0x77n, type === WE ? EA : WE), ReservationConflict);
    await releasePr(pr, I1, 0x77n, type);
    assert.equal(await readReservation(pr, I1), undefined);
  }
  assert.equal(readKeys(await prin(pr, I1, 0x00)).gen, 1);
});

test("PR OUT: unregistered RESERVE conflicts; bad scope/type are INVALID FIELD IN CDB; wrong-type RELEASE", async () => {
  const { pr } = setup();
  await assert.rejects(reserve(pr, I1, 0n, WE), ReservationConflict);
  await register(pr, I1, 9n);
  await assert.rejects(reserve(pr, I1, 8n, WE), ReservationConflict);
  await assert.rejects(reserve(pr, I1, 9n, 2), isSense(SenseKey.IllegalRequest, ASC.INVALID_FIELD_IN_CDB));
  await assert.rejects(
    prout(pr, I1, 0x01, { rk: 9n, type: WE, scope: 1 }),
    isSense(SenseKey.IllegalRequest, ASC.INVALID_FIELD_IN_CDB),
  );
  await assert.rejects(
    prout(pr, I1, 0x08, { rk: 9n }),
    isSense(SenseKey.IllegalRequest, ASC.INVALID_FIELD_IN_CDB),
  );
  await reserve(pr, I1, 9n, EA);
  await assert.rejects(
    releasePr(pr, I1, 9n, WE),
    isSense(SenseKey.IllegalRequest, ASC.INVALID_RELEASE_OF_PERSISTENT_RESERVATION),
  );
  // A registered non-holder's RELEASE is GOOD and changes nothing.
  await register(pr, I2, 10n);
  await releasePr(pr, I2, 10n, EA);
  assert.deepEqual(await readReservation(pr, I1), { key: 9n, type: EA });
});

test("PR OUT: parameter list length must be 24 without SPEC_I_PT", async () => {
  const { pr } = setup();
  const list = Buffer.alloc(32);
  await assert.rejects(
    prout(pr, I1, 0x06, { list }),
    isSense(SenseKey.IllegalRequest, ASC.PARAMETER_LIST_LENGTH_ERROR),
  );
  await assert.rejects(
    prout(pr, I1, 0x06, { list: Buffer.alloc(16) }),
    isSense(SenseKey.IllegalRequest, ASC.PARAMETER_LIST_LENGTH_ERROR),
  );
  await assert.rejects(
    prout(pr, I1, 0x06, { list: Buffer.alloc(24), length: 0 }),
    isSense(SenseKey.IllegalRequest, ASC.PARAMETER_LIST_LENGTH_ERROR),
  );
});

// SPC-4 Table 63 / SBC-3 Table 13 as libiscsi's test_prout_reserve_access checks it:
// [type, registered I2 reads, registered I2 writes, unregistered I2 reads, unregistered I2 writes]
const ACCESS: [number, boolean, boolean, boolean, boolean][] = [
  [EA, false, false, false, false],
  [WE, true, false, true, false],
  [EA_RO, true, true, false, false],
  [WE_RO, true, true, true, false],
  [EA_AR, true, true, false, false],
  [WE_AR, true, true, true, false],
];

for (const [type, regRead, regWrite, unregRead, unregWrite] of ACCESS) {
  test(`conflicts(): type ${type} access for holder, registrant and non-registrant`, async () => {
    const { pr } = setup();
    await register(pr, I1, 1n);
    await register(pr, I2, 2n);
    await reserve(pr, I1, 1n, type);
    assert.equal(pr.conflicts(I1, READ10), false);
    assert.equal(pr.conflicts(I1, WRITE10), false);
    assert.equal(pr.conflicts(I2, READ10), !regRead);
    assert.equal(pr.conflicts(I2, WRITE10), !regWrite);
    await prout(pr, I2, 0x00, { rk: 2n, sark: 0n });
    assert.equal(pr.conflicts(I2, READ10), !unregRead);
    assert.equal(pr.conflicts(I2, WRITE10), !unregWrite);
    // INQUIRY, TEST UNIT READY, REPORT LUNS and READ CAPACITY never conflict.
    for (const op of [0x12, 0x00, 0xa0, 0x25])
      assert.equal(pr.conflicts(I2, Buffer.from([op, 0, 0, 0, 0, 0])), false);
    // MODE SENSE and SYNCHRONIZE CACHE conflict for a non-registrant under every type.
    assert.equal(pr.conflicts(I2, Buffer.from([0x1a, 0, 0x3f, 0, 0xff, 0])), true);
    assert.equal(pr.conflicts(I2, Buffer.from([0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0])), true);
  });
}

test("ownership: the holder unregistering releases WE/EA/RO reservations, not all-registrants ones", async () => {
  for (const type of ALL_TYPES) {
    const { pr, hooks } = setup();
    await register(pr, I1, 1n);
    await register(pr, I2, 2n);
    await reserve(pr, I1, 1n, type);
    await prout(pr, I1, 0x00, { rk: 1n, sark: 0n });
    const res = await readReservation(pr, I2);
    if (type >= WE_AR) {
      assert.deepEqual(res, { key: 0n, type });
      await releasePr(pr, I2, 2n, type);
      assert.deepEqual(hooks.uasFor(I2), []);
    } else {
      assert.equal(res, undefined);
      assert.deepEqual(hooks.uasFor(I2), type === WE_RO || type === EA_RO ? [ASC.RESERVATIONS_RELEASED] : []);
    }
    assert.equal(await readReservation(pr, I2), undefined);
  }
});

test("RELEASE of a registrants-only reservation tells the other registrants", async () => {
  const { pr, hooks } = setup();
  await register(pr, I1, 1n);
  await register(pr, I2, 2n);
  await reserve(pr, I1, 1n, WE_RO);
  await releasePr(pr, I1, 1n, WE_RO);
  assert.deepEqual(hooks.uasFor(I2), [ASC.RESERVATIONS_RELEASED]);
  assert.deepEqual(hooks.uasFor(I1), []);
});

test("CLEAR drops everything, bumps the generation once, UA RESERVATIONS PREEMPTED to the others", async () => {
  const { pr, hooks } = setup();
  await register(pr, I1, 1n);
  await register(pr, I2, 2n);
  await reserve(pr, I1, 1n, EA);
  const gen = readKeys(await prin(pr, I1, 0x00)).gen;
  await assert.rejects(prout(pr, I3, 0x03, { rk: 3n }), ReservationConflict);
  await prout(pr, I1, 0x03, { rk: 1n });
  const rk = readKeys(await prin(pr, I1, 0x00));
  assert.deepEqual(rk.keys, []);
  assert.equal(rk.gen, gen + 1);
  assert.equal(await readReservation(pr, I1), undefined);
  assert.deepEqual(hooks.uasFor(I2), [ASC.RESERVATIONS_PREEMPTED]);
  assert.deepEqual(hooks.uasFor(I1), []);
});

test("PREEMPT without a reservation removes the named registration (libiscsi preempt_rm_reg)", async () => {
  const { pr, hooks } = setup();
  await register(pr, I1, 0x10n);
  await register(pr, I2, 0x20n);
  const gen = readKeys(await prin(pr, I1, 0x00)).gen;
  await prout(pr, I2, 0x04, { rk: 0x20n, sark: 0x10n, type: EA });
  const rk = readKeys(await prin(pr, I1, 0x00));
  assert.deepEqual(rk.keys, [0x20n]);
  assert.equal(rk.gen, gen + 1);
  assert.deepEqual(hooks.uasFor(I1), [ASC.REGISTRATIONS_PREEMPTED]);
  assert.equal(await readReservation(pr, I1), undefined);
  // A key nobody holds conflicts; a zero key without a reservation is an invalid field.
  await assert.rejects(prout(pr, I2, 0x04, { rk: 0x20n, sark: 0x99n, type: EA }), ReservationConflict);
  await assert.rejects(
    prout(pr, I2, 0x04, { rk: 0x20n, sark: 0n, type: EA }),
    isSense(SenseKey.IllegalRequest, ASC.INVALID_FIELD_IN_PARAMETER_LIST),
  );
});

test("PREEMPT AND ABORT of the holder moves the reservation and aborts the preempted nexus's tasks", async () => {
  const { pr, hooks } = setup();
  await register(pr, I1, 1n);
  await register(pr, I2, 2n);
  await register(pr, I3, 3n);
  await reserve(pr, I1, 1n, WE);
  await prout(pr, I2, 0x05, { rk: 2n, sark: 1n, type: EA_RO });
  assert.deepEqual(await readReservation(pr, I3), { key: 2n, type: EA_RO });
  assert.deepEqual(readKeys(await prin(pr, I3, 0x00)).keys, [2n, 3n]);
  assert.deepEqual(hooks.aborted, [[I1.key]]);
  assert.deepEqual(hooks.uasFor(I1), [ASC.REGISTRATIONS_PREEMPTED]);
  // The type changed, so the remaining registrant I3 hears RESERVATIONS RELEASED.
  assert.deepEqual(hooks.uasFor(I3), [ASC.RESERVATIONS_RELEASED]);
  assert.equal(pr.conflicts(I1, READ10), true);
  assert.equal(pr.conflicts(I3, WRITE10), false);
});

test("PREEMPT with SARK 0 under an all-registrants reservation removes every other registrant", async () => {
  const { pr, hooks } = setup();
  await register(pr, I1, 1n);
  await register(pr, I2, 2n);
  await register(pr, I3, 3n);
  await reserve(pr, I1, 1n, WE_AR);
  await prout(pr, I2, 0x04, { rk: 2n, sark: 0n, type: WE });
  assert.deepEqual(readKeys(await prin(pr, I1, 0x00)).keys, [2n]);
  assert.deepEqual(await readReservation(pr, I1), { key: 2n, type: WE });
  assert.deepEqual(hooks.uasFor(I1), [ASC.REGISTRATIONS_PREEMPTED]);
  assert.deepEqual(hooks.uasFor(I3), [ASC.REGISTRATIONS_PREEMPTED]);
});

test("READ FULL STATUS lists key, holder, type, relative port and the iSCSI TransportID", async () => {
  const { pr } = setup();
  await register(pr, I1, 0xaan);
  await register(pr, I2, 0xbbn);
  await reserve(pr, I2, 0xbbn, WE);
  const buf = await prin(pr, I1, 0x03);
  assert.equal(buf.readUInt32BE(0), 2);
  assert.equal(buf.readUInt32BE(4), buf.length - 8);
  const entries: { key: bigint; flags: number; type: number; rtpi: number; tid: Buffer }[] = [];
  for (let off = 8; off < buf.length;) {
    const len = buf.readUInt32BE(off + 20);
    entries.push({
      key: buf.readBigUInt64BE(off),
      flags: buf[off + 12],
      type: buf[off + 13],
      rtpi: buf.readUInt16BE(off + 18),
      tid: buf.subarray(off + 24, off + 24 + len),
    });
    off += 24 + len;
  }
  assert.equal(entries.length, 2);
  assert.deepEqual(
    entries.map((e) => [e.key, e.flags, e.type, e.rtpi]),
    [
      [0xaan, 0, 0, 1],
      [0xbbn, 1, WE, 1],
    ],
  );
  assert.deepEqual(entries[0].tid, I1.transportId());
  assert.deepEqual(entries[1].tid, I2.transportId());
});

test("ALL_TG_PT registers the initiator port on every target port", async () => {
  const { pr, hooks } = setup();
  const otherPortal = new ITNexus(I1.initiatorName, I1.isid, TARGET, 2);
  await register(pr, I1, 5n, { allTgPt: true });
  await reserve(pr, otherPortal, 5n, EA);
  assert.equal(pr.conflicts(I1, WRITE10), false);
  assert.equal(pr.conflicts(I2, READ10), true);
  const fs = await prin(pr, I1, 0x03);
  assert.equal(fs[8 + 12], 0x03); // ALL_TG_PT and R_HOLDER
  // A CLEAR from elsewhere reaches the registrant on both target ports it has used.
  await register(pr, I2, 6n);
  await prout(pr, I2, 0x03, { rk: 6n });
  assert.deepEqual(hooks.uasFor(I1), [ASC.RESERVATIONS_PREEMPTED]);
  assert.deepEqual(hooks.uasFor(otherPortal), [ASC.RESERVATIONS_PREEMPTED]);
  // Without ALL_TG_PT the registration belongs to one target port only.
  const { pr: pr2 } = setup();
  await register(pr2, I1, 5n);
  await assert.rejects(reserve(pr2, otherPortal, 5n, EA), ReservationConflict);
});

test("SPEC_I_PT registers the listed initiator ports; malformed TransportIDs are refused", async () => {
  const { pr } = setup();
  const tid2 = encodeIscsiTransportId({ name: I2.initiatorName, isid: I2.isid });
  const tid3 = encodeIscsiTransportId({ name: I3.initiatorName }); // FORMAT CODE 00b: any ISID
  await prout(pr, I1, 0x00, { sark: 0x42n, specIPt: [tid2, tid3] });
  assert.deepEqual(readKeys(await prin(pr, I1, 0x00)).keys, [0x42n, 0x42n, 0x42n]);
  await reserve(pr, I3, 0x42n, EA_RO);
  assert.equal(pr.conflicts(I2, WRITE10), false);
  // SPEC_I_PT with REGISTER AND IGNORE EXISTING KEY, or from a registered nexus, is invalid.
  await assert.rejects(
    prout(pr, I1, 0x06, { sark: 1n, specIPt: [tid2] }),
    isSense(SenseKey.IllegalRequest, ASC.INVALID_FIELD_IN_PARAMETER_LIST),
  );
  const { pr: fresh } = setup();
  const badProtocol = Buffer.from(tid2);
  badProtocol[0] = 0x40 | 0x01; // FCP
  const shortLen = Buffer.from(tid2);
  shortLen.writeUInt16BE(6, 2);
  const noNul = Buffer.alloc(24, 0x61);
  noNul[0] = 0x05;
  noNul.writeUInt16BE(20, 2);
  const badIsid = encodeIscsiTransportId({ name: I2.initiatorName, isid: "zz0001370001" });
  for (const bad of [badProtocol, shortLen, noNul, badIsid]) {
    await assert.rejects(
      prout(fresh, I1, 0x00, { sark: 1n, specIPt: [bad] }),
      isSense(SenseKey.IllegalRequest, ASC.INVALID_FIELD_IN_PARAMETER_LIST),
    );
  }
  // A TRANSPORTID PARAMETER DATA LENGTH that disagrees with the list length.
  const list = Buffer.alloc(28 + tid2.length);
  list.writeBigUInt64BE(1n, 8);
  list[20] = 0x08;
  list.writeUInt32BE(tid2.length + 4, 24);
  tid2.copy(list, 28);
  await assert.rejects(
    prout(fresh, I1, 0x00, { list }),
    isSense(SenseKey.IllegalRequest, ASC.PARAMETER_LIST_LENGTH_ERROR),
  );
  assert.deepEqual(readKeys(await prin(fresh, I1, 0x00)).keys, []);
});

function registerAndMoveList(rk: bigint, sark: bigint, rtpi: number, tid: Buffer, unreg = false): Buffer {
  const list = Buffer.alloc(24 + tid.length);
  list.writeBigUInt64BE(rk, 0);
  list.writeBigUInt64BE(sark, 8);
  list[17] = unreg ? 0x02 : 0;
  list.writeUInt16BE(rtpi, 18);
  list.writeUInt32BE(tid.length, 20);
  tid.copy(list, 24);
  return list;
}

test("REGISTER AND MOVE hands the reservation to another I_T nexus", async () => {
  const { pr } = setup();
  await register(pr, I1, 1n);
  const tid2 = I2.transportId();
  // Not the holder yet: conflict.
  await assert.rejects(
    prout(pr, I1, 0x07, { list: registerAndMoveList(1n, 7n, 1, tid2), type: WE }),
    ReservationConflict,
  );
  await reserve(pr, I1, 1n, WE);
  await prout(pr, I1, 0x07, { list: registerAndMoveList(1n, 7n, 1, tid2, true), type: EA });
  assert.deepEqual(await readReservation(pr, I1), { key: 7n, type: EA });
  assert.deepEqual(readKeys(await prin(pr, I1, 0x00)).keys, [7n]);
  assert.equal(pr.conflicts(I2, WRITE10), false);
  assert.equal(pr.conflicts(I1, READ10), true);
  // A destination registered for all target ports keeps that one registration.
  const { pr: pr2 } = setup();
  await register(pr2, I1, 1n);
  await register(pr2, I2, 2n, { allTgPt: true });
  await reserve(pr2, I1, 1n, WE);
  await prout(pr2, I1, 0x07, { list: registerAndMoveList(1n, 9n, 1, tid2), type: WE });
  assert.deepEqual(readKeys(await prin(pr2, I1, 0x00)).keys, [1n, 9n]);
  assert.deepEqual(await readReservation(pr2, I1), { key: 9n, type: WE });
  assert.equal(pr2.conflicts(I2, WRITE10), false);
  assert.equal(pr2.conflicts(I1, WRITE10), true);
  // Moving to oneself is invalid.
  await assert.rejects(
    prout(pr, I2, 0x07, { list: registerAndMoveList(7n, 8n, 1, tid2), type: EA }),
    isSense(SenseKey.IllegalRequest, ASC.INVALID_FIELD_IN_PARAMETER_LIST),
  );
});

test("APTPL: refused without a file; saved atomically, restored by load(), forgotten with APTPL=0", async () => {
  const { pr: noFile } = setup();
  await assert.rejects(
    register(noFile, I1, 1n, { aptpl: true }),
    isSense(SenseKey.IllegalRequest, ASC.INVALID_FIELD_IN_PARAMETER_LIST),
  );
  const dir = await mkdtemp(join(tmpdir(), "usertgt-pr-"));
  try {
    const file = join(dir, "lun0.pr.json");
    const { pr } = setup(file);
    await register(pr, I1, 0x1234n, { aptpl: true });
    // The APTPL bit of the most recent REGISTER decides (SPC-4 5.13.5), so I2 sets it too.
    await register(pr, I2, 0x5678n, { aptpl: true });
    await reserve(pr, I1, 0x1234n, EA_RO);
    const saved = JSON.parse(await readFile(file, "utf8")) as { version: number };
    assert.equal(saved.version, 1);

    const { pr: restored } = setup(file);
    await restored.load();
    assert.deepEqual(readKeys(await prin(restored, I1, 0x00)), { gen: 2, keys: [0x1234n, 0x5678n] });
    assert.deepEqual(await readReservation(restored, I1), { key: 0x1234n, type: EA_RO });
    assert.equal((await prin(restored, I1, 0x02))[3] & 0x01, 1); // PTPL_A
    assert.equal(restored.conflicts(I3, READ10), true);
    assert.equal(restored.conflicts(I2, WRITE10), false);

    await register(restored, I1, 0x1234n, { aptpl: false });
    await assert.rejects(stat(file), /ENOENT/);

    await writeFile(file, "{ not json");
    await assert.rejects(setup(file).pr.load(), new RegExp(`APTPL file ${file}: not JSON`));
    await writeFile(
      file,
      JSON.stringify({ version: 1, generation: 1, registrations: [{ key: "xyz" }], reservation: null }),
    );
    await assert.rejects(setup(file).pr.load(), /registration 0: bad key/);
  } finally {
    await rm(dir, { recursive: true });
  }
});

test("SPC-2 RESERVE/RELEASE: holder re-reserves, others conflict, RELEASE by others is a no-op", async () => {
  const { pr } = setup();
  const t = (n: ITNexus, cdb: number[]) =>
    new ScsiTask(Buffer.from(cdb), 0, 3, "simple", n, 0, false, false, []);
  const reserve6 = [0x16, 0, 0, 0, 0, 0];
  const release6 = [0x17, 0, 0, 0, 0, 0];
  pr.reserve(t(I1, reserve6));
  pr.reserve(t(I1, reserve6));
  assert.throws(() => pr.reserve(t(I2, reserve6)), ReservationConflict);
  assert.equal(pr.conflicts(I2, Buffer.from(reserve6)), true);
  pr.release(t(I2, release6));
  const modeSense6 = Buffer.from([0x1a, 0, 0x3f, 0, 0xff, 0]);
  assert.equal(pr.conflicts(I1, modeSense6), false);
  assert.equal(pr.conflicts(I2, modeSense6), true);
  assert.equal(pr.conflicts(I2, Buffer.from([0x12, 0, 0, 0, 0x24, 0])), false); // INQUIRY
  // Every PR IN/OUT conflicts while an SPC-2 reservation exists, even from the holder.
  assert.equal(pr.conflicts(I1, prinCdb(0)), true);
  await assert.rejects(prin(pr, I1, 0x00), ReservationConflict);
  await assert.rejects(register(pr, I2, 1n), ReservationConflict);
  pr.release(t(I1, release6));
  pr.reserve(t(I2, [0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
  assert.equal(pr.conflicts(I1, modeSense6), true);
  pr.release(t(I2, [0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
  assert.equal(pr.conflicts(I1, modeSense6), false);
  assert.throws(() => pr.reserve(t(I1, [0x56, 0x10, 0, 0, 0, 0, 0, 0, 0, 0])), SenseError);
});

test("SPC-2 reservation ends on I_T nexus loss and logical unit reset", () => {
  const { pr } = setup();
  const t = (n: ITNexus) =>
    new ScsiTask(Buffer.from([0x16, 0, 0, 0, 0, 0]), 0, 3, "simple", n, 0, false, false, []);
  pr.reserve(t(I1));
  assert.throws(() => pr.reserve(t(I2)), ReservationConflict);
  pr.nexusLost(I1);
  pr.reserve(t(I2));
  assert.throws(() => pr.reserve(t(I1)), ReservationConflict);
  pr.logicalUnitReset();
  pr.reserve(t(I1));
});

test("CRH: RESERVE/RELEASE under persistent reservations: GOOD no-op for the holder, conflict otherwise", async () => {
  const { pr } = setup();
  const t = (n: ITNexus, byte1 = 0) =>
    new ScsiTask(Buffer.from([0x16, byte1, 0, 0, 0, 0]), 0, 3, "simple", n, 0, false, false, []);
  await register(pr, I1, 1n);
  await reserve(pr, I1, 1n, WE);
  pr.reserve(t(I1));
  assert.throws(() => pr.reserve(t(I2)), ReservationConflict);
  // No SPC-2 reservation was created: PR commands still work.
  assert.equal(pr.conflicts(I1, prinCdb(0)), false);
  assert.deepEqual(await readReservation(pr, I2), { key: 1n, type: WE });
  // RELEASE from the holder is GOOD and leaves the persistent reservation alone.
  pr.release(new ScsiTask(Buffer.from([0x17, 0, 0, 0, 0, 0]), 0, 4, "simple", I1, 0, false, false, []));
  assert.deepEqual(await readReservation(pr, I2), { key: 1n, type: WE });
  // Registrations without a reservation still make RESERVE and RELEASE conflict (SPC-2 5.5.1).
  await releasePr(pr, I1, 1n, WE);
  assert.throws(() => pr.reserve(t(I1)), ReservationConflict);
  assert.throws(
    () =>
      pr.release(new ScsiTask(Buffer.from([0x17, 0, 0, 0, 0, 0]), 0, 5, "simple", I2, 0, false, false, [])),
    ReservationConflict,
  );
  await prout(pr, I1, 0x00, { rk: 1n, sark: 0n });
  pr.reserve(t(I1));
  // The obsolete extent form is refused.
  assert.throws(() => pr.reserve(t(I1, 0x01)), SenseError);
});
