/**
 * CHAP guessing against a real target over TCP: each failure makes the next answer from the same
 * initiator name and source wait longer (login_throttle.ts), parallel guesses queue one behind
 * another, another host is not slowed, and the counters show it.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { pino } from "pino";
import { RawInitiator } from "../support/raw_initiator.js";
import { LoginThrottle } from "../../src/iscsi/login_throttle.js";
import { IscsiStats } from "../../src/iscsi/iscsi_stats.js";
import { DEFAULT_ISCSI_OPTIONS } from "../../src/iscsi/options.js";
import { TARGET, read10, startTarget } from "./harness.js";

const SECRETS = [{ user: "alice", secret: "alicesecret12" }];
const quiet = pino({ level: "silent" });

async function guess(
  port: number,
  secret: string,
  localAddress?: string,
): Promise<{ ms: number; code: number }> {
  const ini = await RawInitiator.connect(port, "127.0.0.1", localAddress);
  const t0 = performance.now();
  const r = await ini.login({
    initiatorName: "iqn.2099-01.attacker:guesser",
    targetName: TARGET,
    chap: { user: "alice", secret },
  });
  const ms = performance.now() - t0;
  ini.close();
  return { ms, code: (r.statusClass << 8) | r.statusDetail };
}

test("CHAP throttle: the 100th wrong guess waits; another host logs in at once; stats count it", async () => {
  // Small delays so 100 guesses fit in a test; the defaults are checked below.
  const h = await startTarget({
    globals: { authFailureDelayMs: 2, authFailureDelayMaxMs: 200 },
    authGroups: [{ tag: 1, secrets: SECRETS }],
    targets: [{ auth: { disableChap: false, requireChap: true, mutualChap: false }, authGroup: 1 }],
  });
  try {
    const times: number[] = [];
    for (let i = 0; i < 100; i++) {
      const g = await guess(h.port, `wrong-${i}`);
      assert.equal(g.code, 0x0201);
      times.push(g.ms);
    }
    assert.ok(times[0]! < 150, `the first guess is answered at once (${times[0]} ms)`);
    assert.ok(times[99]! >= 190, `the 100th guess waited the full delay (${times[99]} ms)`);
    const total = times.reduce((a, b) => a + b, 0);
    assert.ok(total >= 90 * 190, `100 guesses took ${total} ms (unthrottled: well under a second)`);

    // Parallel guesses cannot share a delay: five at once are answered one delay apart.
    const t0 = performance.now();
    const par = await Promise.all([1, 2, 3, 4, 5].map((i) => guess(h.port, `parallel-${i}`)));
    assert.ok(par.every((g) => g.code === 0x0201));
    assert.ok(performance.now() - t0 >= 4 * 190, "parallel guesses were answered one after another");

    // Another host is not slowed by this one's failures, and gets in.
    const delayedBefore = h.target.stats.authDelayedLogins;
    const other = await RawInitiator.connect(h.port, "127.0.0.1", "127.0.0.2");
    const ok = await other.login({ targetName: TARGET, chap: { user: "alice", secret: "alicesecret12" } });
    assert.equal(ok.statusClass, 0);
    assert.equal(
      h.target.stats.authDelayedLogins,
      delayedBefore,
      "a login from another address is not delayed",
    );
    assert.equal((await other.scsi(read10(0, 1), { read: 512 })).status, 0);
    other.close();

    const s = h.target.stats.toJSON();
    assert.equal(s.auth_failures, 105);
    assert.ok(s.auth_delayed_logins! >= 90, JSON.stringify(s));
    assert.ok(s.auth_delay_ms! >= 5000, JSON.stringify(s));
  } finally {
    await h.stop();
  }
});

test("CHAP throttle unit: with the defaults the 100th guess waits 5 s; success clears the pair; slots queue", () => {
  const stats = new IscsiStats();
  const t = new LoginThrottle(
    {
      baseDelayMs: DEFAULT_ISCSI_OPTIONS.authFailureDelayMs,
      maxDelayMs: DEFAULT_ISCSI_OPTIONS.authFailureDelayMaxMs,
    },
    stats,
    quiet,
  );
  assert.equal(t.admit("iqn.x", "10.0.0.1"), 0, "no failure yet: no wait");
  for (let i = 0; i < 99; i++) t.failed("iqn.x", "10.0.0.1");
  const wait100 = t.admit("iqn.x", "10.0.0.1");
  assert.ok(wait100 >= 4900 && wait100 <= 5000, `100th guess waits ${wait100} ms`);
  const next = t.admit("iqn.x", "10.0.0.1");
  assert.ok(next >= wait100 + 4900, `a second guess waiting at once takes the next slot (${next} ms)`);
  assert.equal(t.admit("iqn.x", "10.0.0.2"), 0, "another address is not delayed");
  assert.equal(stats.authFailures, 99);
});
