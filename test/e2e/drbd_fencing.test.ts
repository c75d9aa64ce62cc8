/**
 * Fencing on two usertgt servers (drbd_fixture.ts; DRBD ports 8110-8119, iSCSI 3690-3699): alpha is the
 * Primary with `fencing resource-and-stonith` and a fence-peer handler that records its environment and
 * exits with the code the test wrote. beta is killed (-9) under load:
 *
 * - exit 7 (peer stonithed): the writes go on, the peer's disk is Outdated;
 * - exit 1 (the handler failed): I/O freezes — a WRITE neither completes nor fails — until
 *   `drbdadm resume-io`, after which it completes GOOD and reads back.
 */
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { blockPattern, DrbdPair, LoadWriter, rw10, until } from "./drbd_fixture.js";

describe("DRBD fencing resource-and-stonith with a fence-peer handler", () => {
  let pair: DrbdPair;
  let dir: string;
  const script = () => join(dir, "fence.sh");
  const envFile = () => join(dir, "fence-env");
  const setExit = (code: number) =>
    writeFile(
      script(),
      `#!/bin/sh\nenv > ${envFile()}.tmp && mv ${envFile()}.tmp ${envFile()}\nexit ${code}\n`,
    );
  const readEnv = async () =>
    new Map(
      (await readFile(envFile(), "utf8"))
        .trim()
        .split("\n")
        .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)] as const),
    );

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "drbd-fence-"));
    pair = await DrbdPair.create("drbd-fencing", {
      sizeMiB: 16,
      disk: "resync-rate 100M; fencing resource-and-stonith;",
      handlers: `fence-peer "/bin/sh ${join(dir, "fence.sh")}";`,
      drbdPorts: [8110, 8119],
      iscsiPorts: [3690, 3699],
    });
  });
  after(async () => {
    await pair.close();
    await rm(dir, { recursive: true, force: true });
  });

  it(
    "fence-peer exit 7 lets the Primary go on; a failing one freezes I/O until resume-io",
    { timeout: 180000 },
    async () => {
      await setExit(7);
      await pair.start("alpha", "drbdadm_up_primary");
      await pair.start("beta", "drbdadm_up");
      await pair.waitInSync();

      // Exit 7: the load continues past the loss of the peer.
      const load = new LoadWriter(pair, "alpha", {
        sessions: 2,
        blocksPerWrite: 4,
        firstBlock: 0,
        lastBlock: 2048,
      });
      await load.start();
      await load.waitWrites(100, 30000);
      await pair.kill("beta");
      await until(
        "fence-peer ran",
        async () =>
          readFile(envFile()).then(
            () => true,
            () => false,
          ),
        20000,
      );
      const before7 = load.writes;
      await load.waitWrites(before7 + 200, 30000);
      await load.stop();
      assert.deepEqual(load.failures, [], "no write failed");
      const st = await pair.status("alpha");
      assert.equal(st.role, "Primary");
      assert.equal(st.peer_disk, "Outdated", `alpha after fence-peer 7: ${JSON.stringify(st)}`);
      assert.doesNotMatch(await pair.statusText("alpha"), /suspended/);
      const env = await readEnv();
      assert.equal(env.get("DRBD_RESOURCE"), "r0");
      assert.equal(env.get("DRBD_MINOR"), "2");
      assert.equal(env.get("DRBD_VOLUME"), "0");
      assert.equal(env.get("DRBD_PEER_ADDRESS"), "127.0.0.2");
      assert.equal(env.get("DRBD_PEER_AF"), "ipv4");
      assert.equal(env.get("DRBD_MY_ADDRESS"), "127.0.0.1");
      assert.equal(env.get("DRBD_MY_AF"), "ipv4");
      assert.equal(env.get("DRBD_PEERS"), "beta");
      assert.equal(env.get("DRBD_CONF"), pair.resPath);
      assert.equal(env.get("DRBD_BACKING_DEV"), "/UMCfuse/dev/file_b");
      assert.equal(await load.verify("alpha"), load.acked.size);

      // beta back: the writes of the meantime resync to it.
      await rm(envFile());
      await pair.start("beta", "drbdadm_up");
      await pair.waitInSync();
      assert.equal(await load.verify("beta"), load.acked.size, "beta resynced every acknowledged write");

      // Exit 1: frozen.
      await setExit(1);
      const ini = await pair.session("alpha", 0x40);
      await pair.kill("beta");
      await until(
        "fence-peer ran again",
        async () =>
          readFile(envFile()).then(
            () => true,
            () => false,
          ),
        20000,
      );
      assert.match(await pair.statusText("alpha"), /^r0 role:Primary suspended:fencing\n/);
      const verbose = await pair.adm("alpha", "status", "--verbose");
      assert.match(verbose.stdout, /^r0 node-id:\d+ role:Primary suspended:fencing$/m);
      const bs = pair.blockSize;
      const data = Buffer.concat([0, 1, 2, 3].map((i) => blockPattern(bs, 3000 + i, 9, 1)));
      let settled = false;
      const write = ini
        .scsi(rw10(0x2a, 3000, 4), { write: data, timeoutMs: 60000 })
        .finally(() => (settled = true));
      await new Promise((r) => setTimeout(r, 2000));
      assert.equal(settled, false, "the WRITE neither completed nor failed while I/O is frozen");
      await pair.admOk("alpha", "resume-io");
      const w = await write;
      assert.equal(w.status, 0, `WRITE after resume-io: sense ${w.sense.toString("hex")}`);
      const r = await ini.scsi(rw10(0x28, 3000, 4), { read: 4 * bs });
      assert.equal(r.status, 0);
      assert.ok(r.data.equals(data), "the frozen write reads back after resume-io");
      assert.doesNotMatch(await pair.statusText("alpha"), /suspended/);
      ini.close();
    },
  );
});
