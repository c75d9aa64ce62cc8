/**
 * A stranger that fails DRBD's CRAM-HMAC exchange must not switch replication off. Two real servers
 * replicate r0 with `cram-hmac-alg sha256`; a third address (127.0.0.9) opens data and meta sockets to
 * alpha's DRBD port and plays the handshake with a wrong secret, 100 times while alpha waits for its peer
 * and 100 times while the pair is Connected. Alpha closes each stranger's socket before reading a byte
 * (peer_address_filter.ts), logs it once, never goes StandAlone, pairs with beta, and a write through
 * alpha's LUN is read back through beta's. DRBD ports 7950-7959, iSCSI ports 3470-3479.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { connect } from "node:net";
import { after, before, describe, it } from "node:test";
import { DrbdCommand, encodeConnectionFeatures, encodeHeader, frame } from "../../src/drbd/protocol.js";
import { DrbdPair, rw10, until } from "./drbd_fixture.js";

const BS = 512;
const STRANGER = "127.0.0.9";

/**
 * One attempt by the stranger: both sockets, P_CONNECTION_FEATURES and a CRAM-HMAC challenge and
 * response made with a secret it does not know. Resolves with the bytes alpha sent it.
 */
async function strangerAttempt(port: number): Promise<number> {
  let received = 0;
  const open = async (initial: DrbdCommand) => {
    const s = connect({ port, host: "127.0.0.1", localAddress: STRANGER });
    s.on("error", () => undefined);
    s.on("data", (c: Buffer) => (received += c.length));
    const closed = new Promise<void>((resolve) => s.once("close", () => resolve()));
    await Promise.race([new Promise<void>((resolve) => s.once("connect", () => resolve())), closed]);
    if (!s.destroyed) {
      s.write(encodeHeader(initial, 0, 0));
      if (initial === DrbdCommand.InitialData) {
        s.write(
          Buffer.concat(
            frame(
              DrbdCommand.ConnectionFeatures,
              encodeConnectionFeatures({ protocolMin: 86, protocolMax: 101, featureFlags: 0 }),
              0,
            ),
          ),
        );
        s.write(Buffer.concat(frame(DrbdCommand.AuthChallenge, randomBytes(64), 101)));
        s.write(Buffer.concat(frame(DrbdCommand.AuthResponse, randomBytes(32), 101)));
      }
    }
    return { s, closed };
  };
  const data = await open(DrbdCommand.InitialData);
  const meta = await open(DrbdCommand.InitialMeta);
  const timer = setTimeout(() => {
    data.s.destroy();
    meta.s.destroy();
  }, 3000);
  await Promise.all([data.closed, meta.closed]);
  clearTimeout(timer);
  return received;
}

async function strangerFails(port: number, times: number): Promise<void> {
  for (let i = 0; i < times; i++) {
    const bytes = await strangerAttempt(port);
    assert.equal(bytes, 0, "alpha sent the stranger nothing: closed before any protocol exchange");
  }
}

describe("a stranger failing DRBD authentication", () => {
  let pair: DrbdPair;
  before(async () => {
    pair = await DrbdPair.create("drbd-stranger", {
      blockSize: BS,
      net: 'cram-hmac-alg sha256; shared-secret "pair-secret-1234";',
      drbdPorts: [7950, 7959],
      iscsiPorts: [3470, 3479],
    });
  });
  after(async () => {
    await pair.close();
  });

  it(
    "does not end replication: alpha keeps waiting, pairs, and stays Connected",
    { timeout: 5 * 60 * 1000 },
    async () => {
      const port = pair.nodes.alpha.drbdPort;
      await pair.start("alpha", "drbdadm_up_primary");
      // While alpha waits for beta (the moment the kernel's 8.4 module could be knocked StandAlone).
      await strangerFails(port, 100);
      const waiting = await pair.status("alpha");
      assert.notEqual(waiting.connection, "StandAlone", JSON.stringify(waiting));
      assert.doesNotMatch(waiting.last_error ?? "", /authentic/i);

      await pair.start("beta", "drbdadm_up");
      await until("initial sync", async () => /peer-disk:UpToDate/.test(await pair.statusText("alpha")));
      await strangerFails(port, 100);
      for (const node of ["alpha", "beta"] as const) {
        const st = await pair.status(node);
        assert.equal(st.connection, "Connected", `${node}: ${JSON.stringify(st)}`);
      }

      const pattern = randomBytes(32 * 1024);
      const ia = await pair.session("alpha");
      assert.equal((await ia.scsi(rw10(0x2a, 300, pattern.length / BS), { write: pattern })).status, 0);
      ia.close();
      const ib = await pair.session("beta");
      const r = await ib.scsi(rw10(0x28, 300, pattern.length / BS), { read: pattern.length });
      assert.equal(r.status, 0);
      assert.ok(r.data.equals(pattern), "the write reached beta: replication was never interrupted");
      ib.close();

      const log = pair.stderr("alpha");
      const lines = log
        .split("\n")
        .filter((l) => l.includes(`Closing unexpected connection from ${STRANGER}`));
      assert.equal(lines.length, 1, "the stranger is logged once, not 400 times");
      await pair.stop("beta");
      await pair.stop("alpha");
    },
  );
});
