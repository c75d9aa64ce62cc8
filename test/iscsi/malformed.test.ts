/**
 * Bad input never takes the target down: each malformed exchange ends in a Reject or a dropped
 * connection while a healthy session on the same target keeps doing I/O.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { RawInitiator, pduAs } from "../support/raw_initiator.js";
import { EMPTY, Opcode, RejectReason, TaskAttributeCode, joinData } from "../../src/iscsi/pdu.js";
import { decodePdu } from "../../src/iscsi/pdu_parser.js";
import { serializePduToBuffer } from "../../src/iscsi/pdu_serializer.js";
import { TARGET, pattern, read10, startTarget, write10, type Harness } from "./harness.js";

/** A healthy session doing a write + read-back; returns when the round trip verified. */
async function healthyIo(ini: RawInitiator, lba: number): Promise<void> {
  const data = pattern(4096, lba);
  assert.equal((await ini.scsi(write10(lba, 8), { write: data })).status, 0);
  const r = await ini.scsi(read10(lba, 8), { read: 4096 });
  assert.deepEqual(r.data, data);
}

async function withHealthy(h: Harness, fn: (healthy: RawInitiator) => Promise<void>): Promise<void> {
  const healthy = await RawInitiator.connect(h.port);
  healthy.isid = Buffer.from([0x80, 0, 0, 0, 0, 0x99]);
  assert.equal(
    (await healthy.login({ targetName: TARGET, initiatorName: "iqn.2024-01.test:healthy" })).statusClass,
    0,
  );
  await healthyIo(healthy, 100);
  await fn(healthy);
  await healthyIo(healthy, 200);
  healthy.close();
}

async function loggedIn(h: Harness, opts: Parameters<RawInitiator["login"]>[0] = {}): Promise<RawInitiator> {
  const ini = await RawInitiator.connect(h.port);
  assert.equal((await ini.login({ targetName: TARGET, ...opts })).statusClass, 0);
  return ini;
}

test("unknown opcode in Full Feature Phase is rejected with the BHS echoed", async () => {
  const h = await startTarget();
  try {
    await withHealthy(h, async () => {
      const ini = await loggedIn(h);
      ini.send({ opcode: "unknown", rawOpcode: 0x1c, itt: 0x1234 });
      const rej = await ini.recvResponse();
      assert.equal(rej.opcode, Opcode.Reject);
      assert.equal(pduAs(rej, Opcode.Reject).reason, RejectReason.CommandNotSupported);
      const echoed = joinData(rej.data);
      assert.equal(echoed.length, 48);
      assert.equal(decodePdu(echoed, EMPTY, []).itt, 0x1234);
      // The connection still works afterwards.
      assert.equal((await ini.scsi(read10(0, 1), { read: 512 })).status, 0);
      ini.close();
    });
  } finally {
    await h.stop();
  }
});

test("data segment over the negotiated MaxRecvDataSegmentLength drops the connection", async () => {
  const h = await startTarget({ globals: { maxRecvDataSegmentLength: 8192 } });
  try {
    await withHealthy(h, async () => {
      const ini = await loggedIn(h);
      ini.send({ opcode: Opcode.NopOut, ...ini.next(true), ttt: 0xffffffff, data: [Buffer.alloc(16384)] });
      await ini.waitClosed();
    });
  } finally {
    await h.stop();
  }
});

test("a length beyond the bytes sent (truncated PDU) leaves the target waiting, not crashing; closing cleans up", async () => {
  const h = await startTarget({ globals: { loginTimeoutSec: 0.3 } });
  try {
    await withHealthy(h, async () => {
      const ini = await RawInitiator.connect(h.port);
      const bytes = serializePduToBuffer({
        opcode: Opcode.LoginRequest,
        itt: 0,
        cmdSN: 0,
        isid: Buffer.alloc(6),
        data: [Buffer.from("InitiatorName=iqn.x\0")],
      });
      bytes.writeUIntBE(4000, 5, 3); // DataSegmentLength (RFC 7143 §11.2.1): claims 4000 data bytes, sends 20
      ini.sendRaw(bytes);
      await ini.waitClosed(); // the login timer drops it
    });
  } finally {
    await h.stop();
  }
});

test("wrong header digest drops the connection; wrong data digest is rejected", async () => {
  const h = await startTarget();
  try {
    await withHealthy(h, async () => {
      const keys: [string, string][] = [
        ["HeaderDigest", "CRC32C"],
        ["DataDigest", "CRC32C"],
      ];
      const a = await loggedIn(h, { keys, isid: Buffer.from([0x80, 0, 0, 0, 0, 1]) });
      const wire = a.wire({
        opcode: Opcode.NopOut,
        ...a.next(true),
        ttt: 0xffffffff,
        data: [Buffer.from("ping")],
      });
      const badData = Buffer.from(wire);
      badData[badData.length - 1] ^= 0xff;
      a.sendRaw(badData);
      const rej = await a.recvResponse();
      assert.equal(rej.opcode, Opcode.Reject);
      assert.equal(pduAs(rej, Opcode.Reject).reason, RejectReason.DataDigestError);
      assert.equal(joinData((await a.nop(Buffer.from("again"))).data).toString(), "again");
      const badHeader = Buffer.from(wire);
      badHeader[49] ^= 0xff;
      a.sendRaw(badHeader);
      await a.waitClosed();
    });
  } finally {
    await h.stop();
  }
});

test("garbage before login is answered with a login reject and the connection closed", async () => {
  const h = await startTarget();
  try {
    await withHealthy(h, async () => {
      const ini = await RawInitiator.connect(h.port);
      ini.sendRaw(Buffer.from("GET / HTTP/1.1\r\nHost: example\r\n\r\n".padEnd(48, "x")));
      const rsp = await ini.recv().catch(() => undefined);
      if (rsp) {
        assert.equal(rsp.opcode, Opcode.LoginResponse);
        assert.equal(pduAs(rsp, Opcode.LoginResponse).statusClass, 2);
      }
      await ini.waitClosed();
      // Random bytes with a huge length field: dropped at once.
      const ini2 = await RawInitiator.connect(h.port);
      ini2.sendRaw(Buffer.alloc(64, 0xff));
      await ini2.waitClosed();
    });
  } finally {
    await h.stop();
  }
});

test("a login that never finishes is dropped after loginTimeoutSec", async () => {
  const h = await startTarget({ globals: { loginTimeoutSec: 0.5 } });
  try {
    await withHealthy(h, async () => {
      const ini = await RawInitiator.connect(h.port);
      const started = Date.now();
      await ini.waitClosed(5000);
      assert.ok(Date.now() - started >= 400);
    });
  } finally {
    await h.stop();
  }
});

test("Data-Out breaking the sequence (bad DataSN) is rejected and the command fails", async () => {
  const h = await startTarget();
  try {
    await withHealthy(h, async () => {
      const ini = await loggedIn(h);
      ini.immediateData = false;
      const cmd = {
        opcode: Opcode.ScsiCommand,
        ...ini.next(),
        final: true,
        write: true,
        attribute: TaskAttributeCode.Simple,
        expectedDataTransferLength: 512,
        cdb: write10(5, 1),
      } as const;
      ini.send(cmd);
      const r2t = pduAs(await ini.recvResponse(), Opcode.R2T);
      assert.equal(r2t.opcode, Opcode.R2T);
      ini.send(ini.dataOut(cmd.itt, r2t.ttt, 27, 0, Buffer.alloc(512), true));
      const rej = await ini.recvResponse();
      assert.equal(rej.opcode, Opcode.Reject);
      assert.equal(pduAs(rej, Opcode.Reject).reason, RejectReason.ProtocolError);
      const rsp = await ini.recvResponse();
      assert.equal(rsp.opcode, Opcode.ScsiResponse);
      assert.equal(pduAs(rsp, Opcode.ScsiResponse).status, 2);
      ini.close();
    });
  } finally {
    await h.stop();
  }
});

test("SNACK at ErrorRecoveryLevel 0 is rejected", async () => {
  const h = await startTarget();
  try {
    const ini = await loggedIn(h);
    const { itt, expStatSN } = ini.next();
    ini.send({ opcode: Opcode.SnackRequest, itt, expStatSN });
    const rej = await ini.recvResponse();
    assert.equal(rej.opcode, Opcode.Reject);
    assert.equal(pduAs(rej, Opcode.Reject).reason, RejectReason.SnackReject);
    ini.close();
  } finally {
    await h.stop();
  }
});
