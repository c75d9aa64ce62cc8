import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { log } from "../util/log.js";
import { HANDLER_FAILED, handlerEnvironment, ShellHandlers, type HandlerContext } from "./handlers.js";

const CTX: HandlerContext = {
  resource: "r0",
  minor: 2,
  volume: 0,
  conf: "/etc/drbd.d/r0.res",
  backingDev: "/UMCfuse/dev/file_b",
  peerNames: ["beta"],
  myAddress: "127.0.0.1",
  peerAddress: "fd00::2",
};

test("the environment is drbd_khelper's and drbdadm's: clean, with the resource's DRBD_* variables", () => {
  assert.deepEqual(handlerEnvironment(CTX), {
    HOME: "/",
    TERM: "linux",
    PATH: "/sbin:/usr/sbin:/bin:/usr/bin",
    DRBD_RESOURCE: "r0",
    DRBD_CONF: "/etc/drbd.d/r0.res",
    DRBD_MINOR: "2",
    DRBD_VOLUME: "0",
    DRBD_LL_DISK: "/UMCfuse/dev/file_b",
    DRBD_BACKING_DEV: "/UMCfuse/dev/file_b",
    DRBD_PEER: "beta",
    DRBD_PEERS: "beta",
    DRBD_PEER_ADDRESS: "fd00::2",
    DRBD_PEER_AF: "ipv6",
    DRBD_MY_ADDRESS: "127.0.0.1",
    DRBD_MY_AF: "ipv4",
  });
});

test("a handler runs under /bin/sh -c with that environment; its exit code comes back", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "drbd-handlers-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const out = join(dir, "env");
  const h = new ShellHandlers(
    new Map([
      ["fence-peer", `env > ${out}; echo fenced; exit 7`],
      ["split-brain", "exit 3"],
      ["local-io-error", "sleep 10"],
      ["out-of-sync", "kill -9 $$"],
      ["before-resync-target", "/nonexistent/handler"],
    ]),
    CTX,
    { log, timeoutMs: 300 },
  );
  assert.equal(h.configured("fence-peer"), true);
  assert.equal(h.configured("after-resync-target"), false);
  assert.equal(await h.run("fence-peer"), 7);
  const env = new Map(
    (await readFile(out, "utf8"))
      .trim()
      .split("\n")
      .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)] as const),
  );
  assert.equal(env.get("DRBD_RESOURCE"), "r0");
  assert.equal(env.get("DRBD_MINOR"), "2");
  assert.equal(env.get("DRBD_PEER_ADDRESS"), "fd00::2");
  assert.equal(env.get("DRBD_PEER_AF"), "ipv6");
  assert.equal(env.get("HOME"), "/");
  assert.equal(env.get("NODE_OPTIONS"), undefined, "nothing of the server's environment leaks in");
  assert.equal(await h.run("split-brain"), 3);
  // Not configured: drbdadm returns 0.
  assert.equal(await h.run("after-resync-target"), 0);
  // Over the time limit, killed by a signal, or not runnable (sh says 127): failed.
  const started = Date.now();
  assert.equal(await h.run("local-io-error"), HANDLER_FAILED);
  assert.ok(Date.now() - started < 5000, "the hung handler was killed at its time limit");
  assert.equal(await h.run("out-of-sync"), HANDLER_FAILED);
  assert.equal(await h.run("before-resync-target"), 127);
});
