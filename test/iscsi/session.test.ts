import { test } from "node:test";
import assert from "node:assert/strict";
import { RawInitiator, lunField, pduAs } from "../support/raw_initiator.js";
import {
  Opcode,
  RESERVED_TAG,
  TaskAttributeCode,
  joinData,
  type ScsiCommandPdu,
  type TaskMgmtRequestPdu,
} from "../../src/iscsi/pdu.js";
import { TARGET, read10, startTarget, waitFor, write10 } from "./harness.js";

function tmf(
  ini: RawInitiator,
  fn: number,
  opts: { rtt?: number; refCmdSN?: number; lun?: number } = {},
): TaskMgmtRequestPdu {
  return {
    opcode: Opcode.TaskMgmtRequest,
    ...ini.next(true),
    function: fn,
    lun: lunField(opts.lun ?? 0),
    referencedTaskTag: opts.rtt ?? RESERVED_TAG,
    refCmdSN: opts.refCmdSN ?? 0,
  };
}

function readCmd(ini: RawInitiator, lba: number): ScsiCommandPdu {
  return {
    opcode: Opcode.ScsiCommand,
    ...ini.next(),
    final: true,
    read: true,
    attribute: TaskAttributeCode.Simple,
    expectedDataTransferLength: 512,
    cdb: read10(lba, 1),
  };
}

/** WRITE(10) of one block at LBA 0 without immediate data: the target answers with an R2T. */
function writeCmd(ini: RawInitiator): ScsiCommandPdu {
  return {
    opcode: Opcode.ScsiCommand,
    ...ini.next(),
    final: true,
    write: true,
    attribute: TaskAttributeCode.Simple,
    expectedDataTransferLength: 512,
    cdb: write10(0, 1),
  };
}

test("NOP-Out is echoed with its data; the target pings an idle connection and drops it without an answer", async () => {
  const h = await startTarget({ globals: { nopInIntervalSec: 0.2, nopTimeoutSec: 1 } });
  try {
    const ini = await RawInitiator.connect(h.port);
    await ini.login({ targetName: TARGET });
    const echo = await ini.nop(Buffer.from("hello"));
    assert.equal(echo.opcode, Opcode.NopIn);
    assert.equal(joinData(echo.data).toString(), "hello");
    // Answering pings (recvResponse does) keeps the connection up past several intervals.
    const ping = pduAs(await ini.recv(2000), Opcode.NopIn);
    assert.equal(ping.opcode, Opcode.NopIn);
    assert.equal(ping.itt, RESERVED_TAG);
    assert.notEqual(ping.ttt, RESERVED_TAG);
    ini.send({ opcode: Opcode.NopOut, ...ini.next(true), itt: RESERVED_TAG, ttt: ping.ttt });
    await new Promise((r) => setTimeout(r, 250));
    assert.equal(ini.closed, false);
    // Now stay silent: the next ping goes unanswered and the connection is dropped.
    await ini.waitClosed(5000);
    await waitFor(() => h.target.sessionCount() === 0);
  } finally {
    await h.stop();
  }
});

test("ABORT TASK on a command held by the device: no SCSI response, TMF complete", async () => {
  const h = await startTarget();
  try {
    const ini = await RawInitiator.connect(h.port);
    await ini.login({ targetName: TARGET });
    let release!: () => void;
    h.devices[0].hold = new Promise<void>((r) => (release = r));
    const cmd = readCmd(ini, 0);
    ini.send(cmd);
    ini.send(tmf(ini, 1, { rtt: cmd.itt, refCmdSN: cmd.cmdSN }));
    await waitFor(() => h.devices[0].tmfCalls.length === 1);
    h.devices[0].hold = undefined;
    release();
    const rsp = await ini.recvResponse();
    assert.equal(rsp.opcode, Opcode.TaskMgmtResponse);
    assert.equal(pduAs(rsp, Opcode.TaskMgmtResponse).response, 0);
    assert.equal(h.devices[0].tmfCalls[0].fn, "abort-task");
    // Next PDU is the answer to a fresh NOP, not a late response for the aborted read.
    const echo = await ini.nop(Buffer.from("after"));
    assert.equal(echo.opcode, Opcode.NopIn);
    ini.close();
  } finally {
    await h.stop();
  }
});

test("ABORT TASK for an unknown tag answers 'task does not exist'; TASK REASSIGN 'not supported'; bad LUN", async () => {
  const h = await startTarget();
  try {
    const ini = await RawInitiator.connect(h.port);
    await ini.login({ targetName: TARGET });
    ini.send(tmf(ini, 1, { rtt: 0x777, refCmdSN: ini.cmdSN + 1000 }));
    assert.equal(pduAs(await ini.recvResponse(), Opcode.TaskMgmtResponse).response, 1);
    ini.send(tmf(ini, 8, { rtt: 0x777 }));
    assert.equal(pduAs(await ini.recvResponse(), Opcode.TaskMgmtResponse).response, 5);
    ini.send(tmf(ini, 5, { lun: 9 }));
    assert.equal(pduAs(await ini.recvResponse(), Opcode.TaskMgmtResponse).response, 2);
    ini.send(tmf(ini, 5, { lun: 0 }));
    assert.equal(pduAs(await ini.recvResponse(), Opcode.TaskMgmtResponse).response, 0);
    assert.equal(h.devices[0].tmfCalls.at(-1)?.fn, "logical-unit-reset");
    ini.close();
  } finally {
    await h.stop();
  }
});

test("ABORT TASK on a write still waiting for Data-Out ends it in the transport", async () => {
  const h = await startTarget();
  try {
    const ini = await RawInitiator.connect(h.port);
    ini.immediateData = false;
    await ini.login({ targetName: TARGET });
    const cmd = writeCmd(ini);
    ini.send(cmd);
    assert.equal((await ini.recvResponse()).opcode, Opcode.R2T);
    ini.send(tmf(ini, 1, { rtt: cmd.itt, refCmdSN: cmd.cmdSN }));
    const rsp = await ini.recvResponse();
    assert.equal(rsp.opcode, Opcode.TaskMgmtResponse);
    assert.equal(pduAs(rsp, Opcode.TaskMgmtResponse).response, 0);
    assert.equal((await ini.scsi(read10(0, 1), { read: 512 })).status, 0);
    ini.close();
  } finally {
    await h.stop();
  }
});

test("TARGET COLD RESET responds, then drops the sessions of the target", async () => {
  const h = await startTarget();
  try {
    const ini = await RawInitiator.connect(h.port);
    await ini.login({ targetName: TARGET });
    ini.send(tmf(ini, 7));
    const rsp = await ini.recvResponse();
    assert.equal(pduAs(rsp, Opcode.TaskMgmtResponse).response, 0);
    await ini.waitClosed();
    await waitFor(() => h.target.sessionCount() === 0);
  } finally {
    await h.stop();
  }
});

test("commands are executed in CmdSN order; out-of-window CmdSN is ignored", async () => {
  const h = await startTarget();
  try {
    const ini = await RawInitiator.connect(h.port);
    await ini.login({ targetName: TARGET });
    const first = readCmd(ini, 1);
    const second = readCmd(ini, 2);
    ini.send(second); // arrives first, must wait for `first`
    await new Promise((r) => setTimeout(r, 50));
    ini.send(first);
    const a = await ini.recvResponse();
    const b = await ini.recvResponse();
    assert.equal(a.itt, first.itt);
    assert.equal(b.itt, second.itt);
    // A CmdSN far beyond MaxCmdSN is silently ignored (RFC 7143 §4.2.2.1).
    const expected = ini.cmdSN;
    const stray = readCmd(ini, 3);
    stray.cmdSN = expected + 100000;
    ini.send(stray);
    ini.cmdSN = expected;
    const echo = await ini.nop(Buffer.from("x"));
    assert.equal(echo.opcode, Opcode.NopIn);
    assert.equal(echo.expCmdSN, expected, "ExpCmdSN unchanged by the stray command");
    assert.equal((await ini.scsi(read10(4, 1), { read: 512 })).status, 0);
    ini.close();
  } finally {
    await h.stop();
  }
});

test("stop(): sessions get an Async Message, connections close, nexus released", async () => {
  const h = await startTarget();
  const ini = await RawInitiator.connect(h.port);
  await ini.login({ targetName: TARGET });
  await h.stop();
  await ini.waitClosed();
  assert.equal(ini.events.filter((e) => e.opcode === Opcode.AsyncMessage && e.asyncEvent === 3).length, 1);
  await waitFor(() => h.devices[0].nexusLosses.length === 1);
  assert.equal(h.target.sessionCount(), 0);
});

test("a connection lost while a write waits for Data-Out ends the session and releases the nexus", async () => {
  const h = await startTarget();
  try {
    const ini = await RawInitiator.connect(h.port);
    ini.immediateData = false;
    await ini.login({ targetName: TARGET });
    const cmd = writeCmd(ini);
    ini.send(cmd);
    assert.equal((await ini.recvResponse()).opcode, Opcode.R2T);
    ini.close();
    await waitFor(() => h.devices[0].nexusLosses.length === 1, 2000);
    assert.equal(h.target.sessionCount(), 0);
  } finally {
    await h.stop();
  }
});

test("a login on an existing session's CID replaces that connection and keeps the session", async () => {
  const h = await startTarget();
  try {
    const a = await RawInitiator.connect(h.port);
    const ra = await a.login({ targetName: TARGET });
    const b = await RawInitiator.connect(h.port);
    b.cmdSN = a.cmdSN;
    const rb = await b.login({ targetName: TARGET, tsih: ra.tsih, cid: 0, keys: [] });
    assert.equal(rb.statusClass, 0);
    await a.waitClosed();
    assert.equal(h.target.sessionCount(), 1);
    assert.equal((await b.scsi(read10(0, 1), { read: 512 })).status, 0);
    b.close();
  } finally {
    await h.stop();
  }
});

test("back-pressure: an initiator that stops reading makes the target stop reading too", async () => {
  const h = await startTarget();
  try {
    const ini = await RawInitiator.connect(h.port);
    await ini.login({ targetName: TARGET });
    ini.socket.pause();
    const count = 1000;
    const payload = Buffer.alloc(60000, 0x42);
    for (let i = 0; i < count; i++) {
      ini.send({ opcode: Opcode.NopOut, ...ini.next(true), ttt: RESERVED_TAG, data: [payload] });
    }
    // 60 MB of pings cannot all fit in kernel buffers: if the target keeps reading (and queueing
    // echoes in memory) our side drains; if it holds off, our own write queue stays long.
    await new Promise((r) => setTimeout(r, 500));
    assert.ok(
      ini.socket.writableLength > 8 * 1024 * 1024,
      `only ${ini.socket.writableLength} bytes queued locally`,
    );
    ini.socket.resume();
    for (let i = 0; i < count; i++) {
      const echo = await ini.recvResponse(10000);
      assert.equal(echo.opcode, Opcode.NopIn);
      assert.equal(joinData(echo.data).length, payload.length);
    }
    ini.close();
  } finally {
    await h.stop();
  }
});

test("ABORT TASK SET and CLEAR TASK SET end every held command of the LU without responses", async () => {
  const h = await startTarget();
  try {
    const ini = await RawInitiator.connect(h.port);
    await ini.login({ targetName: TARGET });
    for (const [i, fn] of [2, 4].entries()) {
      let release!: () => void;
      h.devices[0].hold = new Promise<void>((r) => (release = r));
      const cmds = [readCmd(ini, 0), readCmd(ini, 1), readCmd(ini, 2)];
      for (const c of cmds) ini.send(c);
      ini.send(tmf(ini, fn));
      await waitFor(() => h.devices[0].tmfCalls.length === i + 1);
      h.devices[0].hold = undefined;
      release();
      const rsp = await ini.recvResponse();
      assert.equal(rsp.opcode, Opcode.TaskMgmtResponse, `fn ${fn}: got 0x${rsp.opcode.toString(16)}`);
      assert.equal(pduAs(rsp, Opcode.TaskMgmtResponse).response, 0);
    }
    assert.deepEqual(
      h.devices[0].tmfCalls.map((c) => c.fn),
      ["abort-task-set", "clear-task-set"],
    );
    const echo = await ini.nop(Buffer.from("clean"));
    assert.equal(joinData(echo.data).toString(), "clean");
    ini.close();
  } finally {
    await h.stop();
  }
});

test("the CmdSN window closes at QueueDepth running commands and reopens as they finish", async () => {
  const h = await startTarget({ targets: [{ queueDepth: 2 }] });
  try {
    const ini = await RawInitiator.connect(h.port);
    await ini.login({ targetName: TARGET });
    let release!: () => void;
    h.devices[0].hold = new Promise<void>((r) => (release = r));
    const a = readCmd(ini, 0);
    const b = readCmd(ini, 1);
    ini.send(a);
    ini.send(b);
    await new Promise((r) => setTimeout(r, 50));
    const nop = await ini.nop();
    const exp = nop.expCmdSN;
    const max = nop.maxCmdSN;
    assert.equal(exp, ini.cmdSN);
    assert.equal(max, (exp - 1) >>> 0, "window closed: MaxCmdSN = ExpCmdSN - 1");
    h.devices[0].hold = undefined;
    release();
    const r1 = await ini.recvResponse();
    const r2 = await ini.recvResponse();
    // The status arrives in a Data-In or a SCSI Response; both carry MaxCmdSN.
    assert.equal("maxCmdSN" in r2 ? r2.maxCmdSN : undefined, (exp + 1) >>> 0, "both slots free again");
    assert.ok([r1.itt, r2.itt].includes(a.itt) && [r1.itt, r2.itt].includes(b.itt));
    ini.close();
  } finally {
    await h.stop();
  }
});
