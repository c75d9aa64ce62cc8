/**
 * Fuzz: mutated DRBD 8.4 handshakes against a running node, from the configured peer's address (127.0.0.2,
 * beta's — a stranger's address would only exercise the peer address filter, which closes before reading).
 * Templates are what a peer sends: the P_INITIAL_DATA / P_INITIAL_META first packets, P_CONNECTION_FEATURES
 * (src/drbd/protocol.ts encoders), then P_PROTOCOL, P_SYNC_PARAM89, P_SIZES, P_UUIDS and P_STATE as alpha
 * itself encodes them (captured from one real handshake). Each round sends the stream with one mutation
 * (bit flips, header length or command changed, truncation, garbage, oversized length) over real TCP.
 * Alpha must stay up, its memory and log stay bounded, its connection state return to waiting for its peer
 * after each bad peer; afterwards the real beta pairs and a replicated write arrives on beta byte-equal.
 * The fixture configures no shared secret, so P_AUTH_CHALLENGE / P_AUTH_RESPONSE are not part of the
 * handshake here (test/e2e/drbd_stranger_auth.test.ts covers authentication).
 * A round costs ~0.3 s (alpha pauses between connection attempts), so about 120 rounds fit the 35 s budget.
 * The seed is fixed (FUZZ_SEED overrides it) so a failure can be replayed.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import {
  DrbdCommand,
  encodeConnectionFeatures,
  encodeHeader,
  frame,
  PacketFramer,
} from "../../src/drbd/protocol.js";
import { DrbdPair, rw10, until } from "./drbd_fixture.js";
import { prng } from "../support/prng.js";
import { secondaryPeerState } from "../support/drbd_peer.js";

const SEED = Number(process.env.FUZZ_SEED ?? 0xd7bd5eed);
const ROUNDS = 300;
/** Stop early (and say so) rather than pass 60 s on a loaded machine. */
const BUDGET_MS = 35000;
const AGREED = 101;
const BS = 512;
/** Alpha listens for its peer again (drbd_receiver.c conn_disconnect: NetworkFailure → Unconnected → WFConnection). */
const WAITING = ["WFConnection"];

function rssKiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return Number(m?.[1] ?? 0);
}

async function peerSocket(port: number): Promise<Socket> {
  const s = connect({ port, host: "127.0.0.1", localAddress: "127.0.0.2" });
  s.on("error", () => undefined);
  await once(s, "connect");
  return s;
}

const features = (): Buffer =>
  Buffer.concat(
    frame(
      DrbdCommand.ConnectionFeatures,
      encodeConnectionFeatures({ protocolMin: 86, protocolMax: AGREED, featureFlags: 0 }),
      0,
    ),
  );

/** One real handshake as beta would start it; returns alpha's own parameter packets (framed, version 101). */
async function captureTemplates(port: number): Promise<Buffer[]> {
  const data = await peerSocket(port);
  const meta = await peerSocket(port);
  data.write(encodeHeader(DrbdCommand.InitialData, 0, 0));
  meta.write(encodeHeader(DrbdCommand.InitialMeta, 0, 0));
  const framer = new PacketFramer();
  const got = new Map<number, Buffer>();
  // P_SYNC_PARAM89 only when alpha has sync parameters to send; the other four always come.
  const want = [DrbdCommand.Protocol, DrbdCommand.Sizes, DrbdCommand.Uuids, DrbdCommand.State];
  const optional = [DrbdCommand.SyncParam89, DrbdCommand.SyncParam];
  let sentFeatures = false;
  data.on("data", (c: Buffer) => {
    framer.push(c);
    for (let p = framer.next(); p; p = framer.next()) {
      if (p.header.command === DrbdCommand.ConnectionFeatures && !sentFeatures) {
        sentFeatures = true;
        data.write(features());
        framer.setAgreedVersion(AGREED);
      } else if (want.includes(p.header.command) || optional.includes(p.header.command)) {
        // Alpha's parameters and UUIDs echoed (so they compare equal); its state answered as a Secondary's.
        const payload = p.header.command === DrbdCommand.State ? secondaryPeerState() : p.payload;
        const packet = Buffer.concat(frame(p.header.command, payload, AGREED));
        got.set(p.header.command, packet);
        data.write(packet);
      }
    }
  });
  await until(
    "alpha sends its handshake packets",
    async () => Promise.resolve(want.every((c) => got.has(c))),
    10000,
  );
  data.destroy();
  meta.destroy();
  return [...got.values()];
}

type Mutation = "bitflip" | "length" | "command" | "truncate" | "garbage" | "oversized" | "splice";
const KINDS: readonly Mutation[] = [
  "bitflip",
  "length",
  "command",
  "truncate",
  "garbage",
  "oversized",
  "splice",
];

/** The 8.4 header: magic(4) command(2) length(2) for h80; h95 has a 16-bit magic and a 32-bit length. */
function mutate(rand: () => number, packets: Buffer[], kind: Mutation): { initial: boolean; stream: Buffer } {
  const int = (n: number) => Math.floor(rand() * n);
  const list: Buffer[] = packets.map((p) => Buffer.from(p));
  const i = int(list.length);
  const p = list[i] as Buffer;
  let initial = true;
  switch (kind) {
    case "bitflip":
      for (let n = 1 + int(4); n > 0; n--) {
        const at = int(p.length);
        p[at] = (p[at] as number) ^ (1 << int(8));
      }
      break;
    case "length":
      // h80 length at 6, h95 at 4 (32-bit), h100 at 8; write a small random value at one of them.
      p.writeUInt16BE(int(0x10000), [4, 6, 8][int(3)] as number);
      break;
    case "command":
      p.writeUInt16BE(int(0x50), [4, 6][int(2)] as number);
      break;
    case "truncate":
      list.splice(i + 1);
      list[i] = p.subarray(0, int(p.length));
      break;
    case "garbage":
      list[i] = randomBytesSeeded(rand, 1 + int(256));
      if (i === 0 && rand() < 0.3) initial = false;
      break;
    case "oversized":
      if (p.readUInt32BE(0) === 0x83740267) p.writeUInt32BE(0x7fffffff + int(0x80000000), 8);
      else if (p.readUInt16BE(0) === 0x835a) p.writeUInt32BE(0x10000 + int(0x7fff0000), 4);
      else p.writeUInt16BE(0xffff, 6);
      break;
    case "splice":
      list.splice(i, 1, randomBytesSeeded(rand, int(64)), p);
      break;
  }
  return { initial, stream: Buffer.concat(list) };
}

function randomBytesSeeded(rand: () => number, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(rand() * 256);
  return b;
}

describe("fuzz: mutated DRBD handshakes from the peer's address", () => {
  let pair: DrbdPair;
  before(async () => {
    pair = await DrbdPair.create("fuzz-drbd", {
      blockSize: BS,
      sizeMiB: 8,
      drbdPorts: [7980, 7989],
      iscsiPorts: [3590, 3599],
    });
  });
  after(async () => {
    await pair.close();
  });

  it(
    "alpha survives, stays bounded, keeps waiting; then beta pairs and replicates",
    { timeout: 120000 },
    async (t) => {
      t.diagnostic(`seed 0x${SEED.toString(16)} (FUZZ_SEED to replay)`);
      const rejections: unknown[] = [];
      const onRejection = (e: unknown) => rejections.push(e);
      process.on("unhandledRejection", onRejection);
      const alpha = await pair.start("alpha", "drbdadm_up_primary");
      const pid = alpha.child.pid as number;
      const port = pair.nodes.alpha.drbdPort;
      let reconnects = 0;
      const waiting = async (what: string) => {
        await until(
          `alpha waits for its peer (${what})`,
          async () => {
            const st = await pair.status("alpha");
            // Like the kernel (drbd_receiver.c: drbd_do_features / drbd_do_auth return -1, conn_connect's
            // caller then "Discarding network configuration" → C_DISCONNECTING → StandAlone), a peer at the
            // configured address offering no common protocol version, or (receive_protocol → C_DISCONNECTING)
            // incompatible net settings in P_PROTOCOL, leaves alpha StandAlone; so a mutated
            // P_CONNECTION_FEATURES / P_PROTOCOL may do that: the admin's `drbdadm connect` starts it again.
            // StandAlone for any other reason is a failure.
            if (st.connection === "StandAlone") {
              assert.match(st.last_error ?? "", /incompatible/, `StandAlone ${what}: ${JSON.stringify(st)}`);
              await pair.admOk("alpha", "connect");
              reconnects++;
              return false;
            }
            return WAITING.includes(st.connection ?? "");
          },
          10000,
          async () => `${JSON.stringify(await pair.status("alpha"))}\n${pair.stderr("alpha").slice(-3000)}`,
        );
      };
      await waiting("start");
      const templates = [Buffer.alloc(0), ...(await captureTemplates(port))];
      const rand = prng(SEED);
      const rssStart = rssKiB(pid);
      let rssMax = rssStart;
      const start = Date.now();
      let rounds = 0;
      let reached = 0;
      let dropped = 0;
      const counts = new Map<Mutation, number>();
      for (; rounds < ROUNDS && Date.now() - start < BUDGET_MS; rounds++) {
        const kind = KINDS[Math.floor(rand() * KINDS.length)] as Mutation;
        counts.set(kind, (counts.get(kind) ?? 0) + 1);
        templates[0] = features();
        const { initial, stream } = mutate(rand, templates, kind);
        await waiting(`before round ${rounds} (${kind})`);
        const data = await peerSocket(port);
        const meta = await peerSocket(port);
        if (initial) {
          data.write(encodeHeader(DrbdCommand.InitialData, 0, 0));
          meta.write(encodeHeader(DrbdCommand.InitialMeta, 0, 0));
        }
        let answered = false;
        data.on("data", () => (answered = true));
        // (not once(): an "error" such as EPIPE from writing to a socket alpha closed would reject it)
        const closed = new Promise<void>((r) => data.on("close", () => r()));
        data.write(stream);
        // The bad peer goes away once alpha dropped it, or after 100 ms (a mutation alpha accepts).
        const byAlpha = await Promise.race([
          closed.then(() => true),
          new Promise<boolean>((r) => setTimeout(() => r(false), 100)),
        ]);
        if (answered) reached++;
        if (byAlpha) dropped++;
        data.destroy();
        meta.destroy();
        assert.equal(alpha.child.exitCode, null, `alpha still runs after round ${rounds} (${kind})`);
        assert.equal(alpha.child.signalCode, null);
        rssMax = Math.max(rssMax, rssKiB(pid));
      }
      await waiting("after the last round");
      const st = await pair.status("alpha");
      assert.notEqual(st.connection, "StandAlone", JSON.stringify(st));
      t.diagnostic(
        `${rounds} rounds in ${Date.now() - start} ms, ${reached} answered by alpha, ${dropped} dropped by alpha, ${reconnects} drbdadm connect after StandAlone (${[...counts].map(([k, n]) => `${k} ${n}`).join(", ")}); ` +
          `alpha RSS ${rssStart} → max ${rssMax} KiB; log ${pair.stderr("alpha").length} bytes`,
      );
      assert.ok(rounds >= 60, `only ${rounds} rounds in ${BUDGET_MS} ms`);
      // Most rounds must reach the protocol (not those whose first packets are garbage) (alpha's P_CONNECTION_FEATURES), not just its accept pause.
      assert.ok(reached >= rounds * 0.6, `alpha answered only ${reached} of ${rounds} fake peers`);
      assert.ok(rssMax < rssStart + 128 * 1024, `alpha RSS grew from ${rssStart} to ${rssMax} KiB`);
      assert.ok(pair.stderr("alpha").length < 256 * 1024, "alpha's log stays small (rate-limited)");
      assert.deepEqual(rejections, []);
      process.off("unhandledRejection", onRejection);

      // The real peer still pairs, and a replicated write arrives on beta byte-equal.
      await pair.start("beta", "drbdadm_up");
      await pair.waitInSync();
      const pattern = randomBytesSeeded(rand, 64 * 1024);
      const ia = await pair.session("alpha");
      assert.equal((await ia.scsi(rw10(0x2a, 200, pattern.length / BS), { write: pattern })).status, 0);
      ia.close();
      const ib = await pair.session("beta");
      const r = await ib.scsi(rw10(0x28, 200, pattern.length / BS), { read: pattern.length });
      assert.equal(r.status, 0);
      assert.ok(r.data.equals(pattern), "the write reached beta byte-equal");
      ib.close();
      await pair.stop("beta");
      await pair.stop("alpha");
    },
  );
});
