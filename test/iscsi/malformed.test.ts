/**
 * Bad input never takes the target down: each malformed exchange ends in a Reject or a dropped
 * connection while a healthy session on the same target keeps doing I/O.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { RawInitiator } from "../support/raw_initiator.js";
import { Opcode, Pdu, RejectReason } from "../../src/iscsi/pdu.js";
import { encodePdu } from "../../src/iscsi/pdu_writer.js";
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
      const bad = Pdu.create(0x1c as Opcode);
      bad.itt = 0x1234;
      ini.send(bad);
      const rej = await ini.recvResponse();
      assert.equal(rej.opcode, Opcode.Reject);
      assert.equal(rej.bhs[2], RejectReason.CommandNotSupported);
      assert.equal(rej.data.length, 48);
      assert.equal(rej.data.readUInt32BE(16), 0x1234);
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
      const nop = ini.command(Opcode.NopOut, { immediate: true, data: Buffer.alloc(16384) });
      nop.ttt = 0xffffffff;
      ini.send(nop);
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
      const login = Pdu.create(Opcode.LoginRequest, Buffer.from("InitiatorName=iqn.x\0"));
      const bytes = Buffer.concat(encodePdu(login, false, false));
      bytes.writeUIntBE(4000, 5, 3); // claims 4000 data bytes, sends 20
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
      const nop = a.command(Opcode.NopOut, { immediate: true, data: Buffer.from("ping") });
      nop.ttt = 0xffffffff;
      const wire = Buffer.concat(encodePdu(nop, true, true));
      const badData = Buffer.from(wire);
      badData[badData.length - 1] ^= 0xff;
      a.sendRaw(badData);
      const rej = await a.recvResponse();
      assert.equal(rej.opcode, Opcode.Reject);
      assert.equal(rej.bhs[2], RejectReason.DataDigestError);
      assert.equal((await a.nop(Buffer.from("again"))).data.toString(), "again");
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
        assert.equal(rsp.bhs[36], 2);
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
      const cmd = ini.command(Opcode.ScsiCommand, { flags: 0x80 | 0x20 | 0x01 });
      write10(5, 1).copy(cmd.bhs, 32);
      cmd.setU32(20, 512);
      ini.send(cmd);
      const r2t = await ini.recvResponse();
      assert.equal(r2t.opcode, Opcode.R2T);
      ini.send(ini.dataOut(cmd.itt, r2t.ttt, 27, 0, Buffer.alloc(512), true));
      const rej = await ini.recvResponse();
      assert.equal(rej.opcode, Opcode.Reject);
      assert.equal(rej.bhs[2], RejectReason.ProtocolError);
      const rsp = await ini.recvResponse();
      assert.equal(rsp.opcode, Opcode.ScsiResponse);
      assert.equal(rsp.bhs[3], 2);
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
    ini.send(ini.command(Opcode.SnackRequest));
    const rej = await ini.recvResponse();
    assert.equal(rej.opcode, Opcode.Reject);
    assert.equal(rej.bhs[2], RejectReason.SnackReject);
    ini.close();
  } finally {
    await h.stop();
  }
});
