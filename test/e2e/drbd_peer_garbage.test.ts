/**
 * DRBD, a misbehaving peer: a fake peer in the test connects to the running alpha's DRBD
 * port (as beta would: P_INITIAL_DATA / P_INITIAL_META sockets) and sends garbage instead of the initial
 * packet, a wrong magic, an oversized and a truncated P_CONNECTION_FEATURES, and — after a real handshake
 * built with src/drbd/protocol.ts (features, then alpha's own P_PROTOCOL / P_SYNC_PARAM / P_SIZES /
 * P_UUIDS echoed, so alpha goes Connected) — an oversized P_DATA and a wrong-magic packet on the meta
 * socket. Each time alpha drops that connection (last_error names why) and goes back to waiting for its
 * peer, while two iSCSI sessions keep writing (every acknowledged block checked afterwards). Then the real
 * beta pairs with alpha, syncs, and holds the same data.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { connect, type Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import {
  DrbdCommand,
  encodeConnectionFeatures,
  encodeHeader,
  frame,
  PacketFramer,
  type Packet,
} from "../../src/drbd/protocol.js";
import { DrbdPair, LoadWriter, until } from "./drbd_fixture.js";
import { secondaryPeerState } from "../support/drbd_peer.js";

const AGREED = 101;
/**
 * States in which alpha is about to listen for its peer again: after a failed attempt it pauses briefly in
 * NetworkFailure / ProtocolError; it must not stay there (the second test).
 */
const WAITING = ["WFConnection", "NetworkFailure", "ProtocolError"];
/** The states alpha was left in after a dropped connection, when not WFConnection within 5 s. */
const stuck: string[] = [];

/** Two sockets to alpha's DRBD port from beta's address, announced as data and meta; alpha's packets framed. */
class FakePeer {
  private readonly framer = new PacketFramer();
  private readonly packets: Packet[] = [];
  private wake: (() => void) | undefined;
  private closedCount = 0;

  private constructor(
    readonly data: Socket,
    readonly meta: Socket,
  ) {
    data.on("data", (c: Buffer) => {
      this.framer.push(c);
      for (let p = this.framer.next(); p; p = this.framer.next()) this.packets.push(p);
      this.wake?.();
    });
    for (const s of [data, meta]) {
      s.on("error", () => undefined);
      s.on("close", () => {
        this.closedCount++;
        this.wake?.();
      });
    }
  }

  static async open(port: number, initial = true): Promise<FakePeer> {
    const sock = async (cmd: DrbdCommand) => {
      const s = connect({ port, host: "127.0.0.1", localAddress: "127.0.0.2" });
      await once(s, "connect");
      if (initial) s.write(encodeHeader(cmd, 0, 0));
      return s;
    };
    const data = await sock(DrbdCommand.InitialData);
    const meta = await sock(DrbdCommand.InitialMeta);
    return new FakePeer(data, meta);
  }

  get closed(): boolean {
    return this.closedCount === 2;
  }

  /** The next packet alpha sent on the data socket, or undefined if the sockets closed first. */
  async next(ms = 10000): Promise<Packet | undefined> {
    const end = Date.now() + ms;
    while (this.packets.length === 0) {
      if (this.closedCount > 0) return undefined;
      if (Date.now() > end) throw new Error(`fake peer: no packet from alpha in ${ms} ms`);
      await new Promise<void>((r) => {
        this.wake = r;
        setTimeout(r, 100);
      });
    }
    return this.packets.shift();
  }

  /** Both sockets closed by alpha (the test never closes them itself before this). */
  async waitClosed(ms = 10000): Promise<void> {
    await until("alpha closes the fake peer's sockets", async () => Promise.resolve(this.closed), ms);
  }

  destroy(): void {
    this.data.destroy();
    this.meta.destroy();
  }

  /** Waits for alpha's P_CONNECTION_FEATURES (false: alpha closed the sockets first). */
  async features(): Promise<boolean> {
    const p = await this.next();
    if (!p) return false;
    assert.equal(p.header.command, DrbdCommand.ConnectionFeatures);
    return true;
  }

  /** Our features (protocol 86-101, no feature flags), then alpha's own parameters and UUIDs echoed (so the UUIDs compare equal). */
  async handshake(): Promise<void> {
    for (const b of frame(
      DrbdCommand.ConnectionFeatures,
      encodeConnectionFeatures({ protocolMin: 86, protocolMax: AGREED, featureFlags: 0 }),
      0,
    ))
      this.data.write(b);
    this.framer.setAgreedVersion(AGREED);
    const want = new Set([DrbdCommand.Protocol, DrbdCommand.Sizes, DrbdCommand.Uuids, DrbdCommand.State]);
    while (want.size > 0) {
      const p = await this.next();
      if (!p) throw new Error("alpha closed the fake peer during the handshake");
      const cmd = p.header.command;
      want.delete(cmd);
      if (cmd === DrbdCommand.State) {
        const state = secondaryPeerState();
        for (const b of frame(DrbdCommand.State, state, AGREED)) this.data.write(b);
      } else if (
        cmd === DrbdCommand.Protocol ||
        cmd === DrbdCommand.SyncParam89 ||
        cmd === DrbdCommand.SyncParam ||
        cmd === DrbdCommand.Sizes ||
        cmd === DrbdCommand.Uuids
      ) {
        for (const b of frame(cmd, p.payload, AGREED)) this.data.write(b);
      }
    }
  }
}

describe("DRBD: a peer sending garbage is dropped; the node keeps serving and still pairs", () => {
  let pair: DrbdPair;
  before(async () => {
    pair = await DrbdPair.create("drbd-garbage", { protocol: "C", sizeMiB: 16 });
  });
  after(async () => {
    await pair.close();
  });

  it(
    "garbage, wrong magic, oversized, truncated packets; then the real peer",
    { timeout: 90000 },
    async () => {
      const alpha = await pair.start("alpha", "drbdadm_up_primary");
      const blocks = await pair.usableBlocks("alpha");
      const load = new LoadWriter(pair, "alpha", {
        sessions: 2,
        blocksPerWrite: 2,
        firstBlock: 0,
        lastBlock: blocks,
      });
      await load.start();
      await load.waitWrites(20);
      const port = pair.nodes.alpha.drbdPort;

      const waiting = async () => {
        await until(
          "alpha waits for its peer",
          async () => WAITING.includes((await pair.status("alpha")).connection ?? ""),
          20000,
          async () => `${JSON.stringify(await pair.status("alpha"))}\n${pair.stderr("alpha").slice(-3000)}`,
        );
      };
      /** Opens a fake peer once alpha accepts (it drops sockets while it pauses between attempts). */
      const fake = async (initial = true): Promise<FakePeer> => {
        for (let attempt = 0; ; attempt++) {
          await waiting();
          const f = await FakePeer.open(port, initial);
          if (!initial || (await f.features())) return f;
          f.destroy();
          if (attempt >= 5) throw new Error("alpha never answered the fake peer's initial packets");
        }
      };
      const dropped = async (f: FakePeer, why: RegExp, what: string) => {
        await f.waitClosed();
        await until(
          `alpha reports ${what}`,
          async () => why.test((await pair.status("alpha")).last_error ?? ""),
          10000,
          async () => JSON.stringify(await pair.status("alpha")),
        );
        // drbdadm status should say Connecting again once alpha waits for its peer (checked by the next test).
        const end = Date.now() + 5000;
        let state = (await pair.status("alpha")).connection;
        while (state !== "WFConnection" && Date.now() < end) {
          await new Promise((r) => setTimeout(r, 200));
          state = (await pair.status("alpha")).connection;
        }
        if (state !== "WFConnection") stuck.push(`after ${what}: ${state}`);
        assert.equal(alpha.child.exitCode, null, `alpha still runs after ${what}`);
        assert.equal(alpha.child.signalCode, null);
        const before = load.writes;
        await load.waitWrites(before + 10, 20000);
      };

      // 1. No initial packet, just bytes: alpha closes both sockets without pairing them.
      {
        const f = await fake(false);
        f.data.write(randomBytes(64));
        f.meta.write(randomBytes(64));
        await f.waitClosed();
        assert.equal((await pair.status("alpha")).connection, "WFConnection");
      }
      // 2. Wrong magic instead of P_CONNECTION_FEATURES.
      {
        const f = await fake();
        f.data.write(Buffer.from("deadbeef00000000", "hex"));
        await dropped(f, /wrong magic 0xdeadbeef/, "a wrong magic");
      }
      // 3. Oversized P_CONNECTION_FEATURES (the packet has 72 bytes; the header claims 65535).
      {
        const f = await fake();
        f.data.write(encodeHeader(DrbdCommand.ConnectionFeatures, 0xffff, 0));
        await dropped(f, /oversized packet: P_CONNECTION_FEATURES/, "an oversized packet");
      }
      // 4. Truncated P_CONNECTION_FEATURES: 10 of 72 bytes, then EOF.
      {
        const f = await fake();
        f.data.write(Buffer.concat([encodeHeader(DrbdCommand.ConnectionFeatures, 72, 0), Buffer.alloc(10)]));
        f.data.end();
        await dropped(f, /truncated packet: P_CONNECTION_FEATURES/, "a truncated packet");
      }
      // 5. A real handshake, then a P_DATA claiming 2 GiB on the data socket.
      {
        const f = await fake();
        await f.handshake();
        await until(
          "alpha Connected to the fake peer",
          async () => (await pair.status("alpha")).connection === "Connected",
          10000,
        );
        f.data.write(encodeHeader(DrbdCommand.Data, 0x7fffffff, AGREED));
        await dropped(f, /oversized packet: P_DATA/, "an oversized P_DATA");
      }
      // 6. A real handshake, then a wrong magic on the meta socket.
      {
        const f = await fake();
        await f.handshake();
        await until(
          "alpha Connected to the fake peer",
          async () => (await pair.status("alpha")).connection === "Connected",
          10000,
        );
        f.meta.write(Buffer.concat([Buffer.from("0badf00d", "hex"), Buffer.alloc(12)]));
        await dropped(f, /wrong magic 0x0badf00d/, "a wrong magic on the meta socket");
      }
      await load.stop();
      assert.deepEqual(load.failures, []);
      assert.equal(await load.verify("alpha"), load.acked.size);

      // The real peer still pairs: full sync of the fresh beta, then the same data on both.
      await pair.start("beta", "drbdadm_up");
      await pair.waitInSync();
      assert.equal(await load.verify("beta"), load.acked.size);
      await pair.stop("beta");
      await pair.stop("alpha");
      await pair.assertFilesEqual(blocks * pair.blockSize);
    },
  );

  it("after a dropped connection the state returns to WFConnection (status: Connecting)", () => {
    // drbd_receiver.c conn_disconnect: NetworkFailure / ProtocolError → Unconnected → WFConnection.
    assert.deepEqual(stuck, [], "alpha reconnects but keeps reporting the failure state");
  });
});
