/**
 * The send side of a connection over real TCP on 127.0.0.1: PDUs sent during one event-loop turn
 * leave together in one corked write (one writev), in order; a large turn is flushed early; a
 * drop flushes first; drained() hands bulk senders back-pressure.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer, connect, type Socket } from "node:net";
import { Opcode, joinData, type ParsedPdu } from "../../src/iscsi/pdu.js";
import { PduParser } from "../../src/iscsi/pdu_parser.js";
import { GATHER_LIMIT, PduWriter } from "../../src/iscsi/pdu_writer.js";

/** A connected pair: `local` is the side under test, `received` collects what the peer parses. */
async function socketPair(): Promise<{ local: Socket; peer: Socket; received: ParsedPdu[]; close(): void }> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  const accepted = new Promise<Socket>((r) => server.once("connection", r));
  const local = connect({ port, host: "127.0.0.1" });
  await new Promise<void>((r) => local.once("connect", () => r()));
  const peer = await accepted;
  const parser = new PduParser(0xffffff);
  const received: ParsedPdu[] = [];
  peer.on("data", (chunk: Buffer) => received.push(...parser.push(chunk)));
  return {
    local,
    peer,
    received,
    close() {
      local.destroy();
      peer.destroy();
      server.close();
    },
  };
}

async function until(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 5));
  }
}

test("PDUs sent in one turn leave in one corked write, in order, after the turn", async () => {
  const pair = await socketPair();
  try {
    const writer = new PduWriter(pair.local);
    let corks = 0;
    const cork = pair.local.cork.bind(pair.local);
    pair.local.cork = () => {
      corks++;
      cork();
    };
    for (let i = 0; i < 15; i++) {
      assert.equal(writer.send({ opcode: Opcode.NopIn, itt: i, data: [Buffer.alloc(4096, i)] }), true);
    }
    assert.equal(pair.local.bytesWritten, 0, "nothing handed to the socket during the turn");
    await new Promise((r) => setImmediate(r));
    assert.equal(corks, 1, "one corked write for the whole turn");
    assert.equal(pair.local.bytesWritten, 15 * (48 + 4096));
    await until(() => pair.received.length === 15);
    assert.deepEqual(
      pair.received.map((p) => p.itt),
      [...Array(15).keys()],
    );
    assert.equal(joinData(pair.received[7].data)[100], 7);
  } finally {
    pair.close();
  }
});

test("a turn that gathers GATHER_LIMIT bytes is written at once; drained() flushes the rest", async () => {
  const pair = await socketPair();
  try {
    const writer = new PduWriter(pair.local);
    const big = Buffer.alloc(64 * 1024);
    let sent = 0;
    while (pair.local.bytesWritten === 0) {
      writer.send({ opcode: Opcode.DataIn, itt: 1, dataSN: sent++, data: [big] });
      assert.ok(sent * big.length <= GATHER_LIMIT, "flushed no later than at the limit");
    }
    writer.send({ opcode: Opcode.DataIn, itt: 1, dataSN: sent++, final: true, data: [big] });
    const before = pair.local.bytesWritten;
    await writer.drained();
    assert.ok(pair.local.bytesWritten > before, "drained() wrote what was gathered");
    await until(() => pair.received.length === sent);
  } finally {
    pair.close();
  }
});

test("a peer that does not read makes the writer blocked until it reads again", async () => {
  const pair = await socketPair();
  try {
    pair.peer.pause();
    const writer = new PduWriter(pair.local);
    const big = Buffer.alloc(256 * 1024);
    // Fill the socket and both kernel buffers: blocked, and still blocked a while later.
    for (let i = 0; i < 400; i++) {
      writer.send({ opcode: Opcode.DataIn, itt: 1, dataSN: i, data: [big] });
      await new Promise((r) => setImmediate(r));
      if (!writer.blocked) continue;
      await new Promise((r) => setTimeout(r, 50));
      if (writer.blocked) break;
    }
    assert.equal(writer.blocked, true);
    let drained = false;
    const wait = writer.drained().then(() => (drained = true));
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(drained, false, "drained() waits while the peer does not read");
    pair.peer.resume();
    await wait;
    assert.equal(writer.blocked, false);
  } finally {
    pair.close();
  }
});
