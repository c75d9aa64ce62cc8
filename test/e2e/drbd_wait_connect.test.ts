/**
 * `drbdadm wait-connect` with `startup { wfc-timeout; degr-wfc-timeout; }` on two servers
 * (drbd_fixture.ts): the wait ends when the peer connects, times out with exit 5 after wfc-timeout, ends at
 * once on StandAlone (unless --wait-after-sb), and uses degr-wfc-timeout on a node that went away as a
 * Primary without its peer (kill -9 while degraded).
 *
 * DRBD ports 8080-8089, iSCSI 3680-3689.
 */
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { after, before, describe, it } from "node:test";
import { DrbdPair } from "./drbd_fixture.js";

describe("drbdadm wait-connect", () => {
  let pair: DrbdPair;
  before(async () => {
    pair = await DrbdPair.create("drbd-wfc", { drbdPorts: [8080, 8089], iscsiPorts: [3680, 3689] });
    const res = await readFile(pair.resPath, "utf8");
    await writeFile(
      pair.resPath,
      res.replace("resource r0 {", "resource r0 {\n    startup { wfc-timeout 3; degr-wfc-timeout 1; }"),
    );
  });
  after(async () => {
    await pair.close();
  });

  const timed = async (fn: () => Promise<{ code: number | null; stderr: string }>) => {
    const t0 = Date.now();
    const r = await fn();
    return { ...r, ms: Date.now() - t0 };
  };

  it(
    "times out after wfc-timeout with exit 5, then returns once the peer connects",
    { timeout: 120000 },
    async () => {
      await pair.start("alpha", "drbdadm_up_primary");
      const s = (await pair.status("alpha")) as unknown as { startup: Record<string, unknown> };
      assert.deepEqual(s.startup, {
        wfc_timeout: 3,
        degr_wfc_timeout: 1,
        outdated_wfc_timeout: 0,
        timeout_type: "default",
      });
      const alone = await timed(() => pair.adm("alpha", "wait-connect"));
      assert.equal(alone.code, 5, alone.stderr);
      assert.match(alone.stderr, /not connected after 3 s/);
      assert.ok(alone.ms >= 2900 && alone.ms < 15000, `waited ${alone.ms} ms`);

      // Forever (0), until beta comes up.
      const waiting = timed(() => pair.adm("alpha", "wait-connect", "--wfc-timeout", "0"));
      await new Promise((r) => setTimeout(r, 1000));
      await pair.start("beta", "drbdadm_up");
      const joined = await waiting;
      assert.equal(joined.code, 0, joined.stderr);
      const now = await pair.status("alpha");
      assert.ok(now.connection !== "WFConnection" && now.connection !== "StandAlone", JSON.stringify(now));
      const connected = await pair.adm("beta", "wait-connect");
      assert.equal(connected.code, 0, connected.stderr);
      await pair.waitInSync();
    },
  );

  it("StandAlone ends the wait at once, unless --wait-after-sb", { timeout: 60000 }, async () => {
    await pair.admOk("beta", "disconnect");
    const r = await timed(() => pair.adm("beta", "wait-connect"));
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /r0 is StandAlone: not waiting/);
    assert.ok(r.ms < 10000);
    const sb = await pair.adm(
      "beta",
      "wait-connect",
      "--wait-after-sb",
      "--wfc-timeout",
      "1",
      "--degr-wfc-timeout",
      "1",
    );
    assert.equal(sb.code, 5, sb.stderr);
    assert.match(sb.stderr, /configured to wait anyways/);
    await pair.admOk("beta", "connect");
    await pair.waitInSync();
  });

  it("a node that went away as a degraded Primary waits degr-wfc-timeout", { timeout: 120000 }, async () => {
    await pair.stop("beta");
    // alpha, Primary without its peer, writes and dies.
    const ini = await pair.session("alpha");
    const w = await ini.scsi(Buffer.from([0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0]), {
      write: Buffer.alloc(4096, 7),
    });
    assert.equal(w.status, 0);
    ini.close();
    await pair.kill("alpha");
    await pair.start("alpha", "drbdadm_up");
    const s = (await pair.status("alpha")) as unknown as { startup: { timeout_type: string } };
    assert.equal(s.startup.timeout_type, "degraded");
    const r = await timed(() => pair.adm("alpha", "wait-connect"));
    assert.equal(r.code, 5, r.stderr);
    assert.match(r.stderr, /not connected after 1 s/);
    // The message names the timeout chosen (degr-wfc-timeout 1, not wfc-timeout 3); the time includes the
    // CLI's start, so only its lower bound says something.
    assert.ok(r.ms >= 900, `waited ${r.ms} ms`);
  });
});
