/**
 * DRBD visibility as drbd-utils 9 shows it, on a real pair (drbd_fixture.ts) during its initial resync
 * and once connected: `usertgt drbdadm status --verbose --statistics`, `cstate` / `dstate` / `role`,
 * `wait-sync` (plain progress lines when stderr is not a terminal) and `usertgt drbdsetup events2`
 * (`--now`, and the stream across the resync). Ports: DRBD 7960-7969, iSCSI 3540-3545.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { after, before, describe, it } from "node:test";
import { DrbdPair, until } from "./drbd_fixture.js";
import { CLI, run, runCli } from "./harness.js";

const N = "\\d+";

describe("drbdadm status / drbdsetup events2 in drbd-utils 9's format", () => {
  let pair: DrbdPair;
  before(async () => {
    pair = await DrbdPair.create("drbd-monitor", {
      sizeMiB: 64,
      disk: "resync-rate 12M; c-plan-ahead 0;",
      drbdPorts: [7960, 7969],
      iscsiPorts: [3540, 3545],
    });
  });
  after(async () => {
    await pair.close();
  });

  const cli = (node: "alpha" | "beta", ...args: string[]) =>
    runCli(["drbdadm", "-s", pair.nodes[node].sock, ...args]);

  it(
    "status, cstate/dstate/role, wait-sync and events2 through a resync",
    { timeout: 5 * 60_000 },
    async () => {
      await pair.start("alpha", "drbdadm_up_primary");
      const alone = await cli("alpha", "status", "r0", "--verbose", "--statistics");
      assert.equal(alone.code, 0, alone.stderr);
      assert.match(
        alone.stdout,
        new RegExp(
          `^r0 node-id:0 role:Primary suspended:no\\n    write-ordering:flush\\n` +
            `  volume:0 minor:2 disk:UpToDate quorum:yes\\n      size:${N} read:${N} written:${N} al-writes:${N}\\n` +
            `  beta node-id:1 connection:Connecting role:Unknown congested:no\\n$`,
        ),
      );
      assert.equal((await cli("alpha", "cstate", "r0")).stdout, "WFConnection\n");
      assert.equal((await cli("alpha", "dstate", "r0")).stdout, "UpToDate/DUnknown\n");
      assert.equal((await cli("alpha", "role", "r0")).stdout, "Primary/Unknown\n");

      // The event stream, from before the peer exists until after the resync.
      const events = spawn(
        process.execPath,
        [CLI, "drbdsetup", "-s", pair.nodes.alpha.sock, "events2", "all", "--statistics"],
        {
          stdio: ["ignore", "pipe", "pipe"],
        },
      );
      let stream = "";
      events.stdout.setEncoding("utf8").on("data", (d: string) => (stream += d));
      await until("events2 exists lines", async () => stream.includes("exists -\n"), 10_000);

      await pair.start("beta", "drbdadm_up");
      let syncing = "";
      await until("a status during the resync", async () => {
        const st = await cli("alpha", "status", "r0", "--verbose", "--statistics");
        if (/replication:SyncSource/.test(st.stdout) && / eta:\d+/.test(st.stdout)) syncing = st.stdout;
        return syncing !== "" || /replication:Established/.test(st.stdout);
      });
      assert.notEqual(syncing, "", "a status saw the resync running (SyncSource with speed and ETA)");
      assert.match(
        syncing,
        new RegExp(
          `^r0 node-id:0 role:Primary suspended:no\\n    write-ordering:flush\\n` +
            `  volume:0 minor:2 disk:UpToDate quorum:yes\\n      size:${N} read:${N} written:${N} al-writes:${N}\\n` +
            `  beta node-id:1 connection:Connected role:Secondary congested:no\\n` +
            `    volume:0 replication:SyncSource peer-disk:Inconsistent done:\\d+\\.\\d\\d resync-suspended:no\\n` +
            `        received:${N} sent:${N} out-of-sync:${N} pending:${N} unacked:${N} dbdt1:\\d+\\.\\d\\d eta:${N}\\n$`,
        ),
      );
      const plain = await cli("alpha", "status", "r0", "--statistics");
      assert.match(plain.stdout, /^r0 role:Primary\n {4}write-ordering:flush\n {2}disk:UpToDate\n/);

      // wait-sync with stderr on a pipe: plain progress lines, then "in sync", exit 0.
      const wait = await runCli(["drbdadm", "-s", pair.nodes.alpha.sock, "wait-sync", "r0"], 120_000);
      assert.equal(wait.code, 0, wait.stderr);
      assert.match(wait.stderr, /^r0: in sync \(UpToDate\/UpToDate\)$/m);
      assert.match(
        wait.stderr,
        /^r0: SyncSource \d+\.\d% done, [\d.]+ [KMG]i?B left, [\d.]+ MiB\/s, ETA \d\d:\d\d$/m,
      );
      assert.ok(!wait.stderr.includes("\u001b["), "no terminal control sequences on a pipe");

      const synced = await cli("alpha", "status", "r0", "--verbose", "--statistics");
      assert.match(
        synced.stdout,
        new RegExp(
          `  beta node-id:1 connection:Connected role:Secondary congested:no\\n` +
            `    volume:0 replication:Established peer-disk:UpToDate resync-suspended:no\\n` +
            `        received:${N} sent:${N} out-of-sync:0 pending:0 unacked:0\\n$`,
        ),
      );
      assert.equal((await cli("alpha", "cstate", "r0")).stdout, "Connected\n");
      assert.equal((await cli("alpha", "dstate", "r0")).stdout, "UpToDate/UpToDate\n");
      assert.equal((await cli("beta", "role", "r0")).stdout, "Secondary/Primary\n");
      const short = await cli("beta", "status", "r0", "--verbose");
      assert.equal(
        short.stdout,
        "r0 node-id:1 role:Secondary suspended:no\n  volume:0 minor:2 disk:UpToDate quorum:yes\n" +
          "  alpha node-id:0 connection:Connected role:Primary congested:no\n" +
          "    volume:0 replication:Established peer-disk:UpToDate resync-suspended:no\n",
      );

      const now = await runCli(["drbdsetup", "-s", pair.nodes.beta.sock, "events2", "--now"]);
      assert.equal(now.code, 0, now.stderr);
      assert.equal(
        now.stdout,
        "exists resource name:r0 role:Secondary suspended:no\n" +
          "exists connection name:r0 peer-node-id:0 conn-name:alpha connection:Connected role:Primary\n" +
          "exists device name:r0 volume:0 minor:2 disk:UpToDate client:no quorum:yes\n" +
          "exists peer-device name:r0 peer-node-id:0 conn-name:alpha volume:0 replication:Established peer-disk:UpToDate peer-client:no resync-suspended:no\n" +
          "exists -\n",
      );
      const nowStats = await runCli([
        "drbdsetup",
        "-s",
        pair.nodes.alpha.sock,
        "events2",
        "r0",
        "--now",
        "--statistics",
      ]);
      assert.match(
        nowStats.stdout,
        new RegExp(
          `^exists resource name:r0 role:Primary suspended:no write-ordering:flush\\n` +
            `exists connection name:r0 peer-node-id:1 conn-name:beta connection:Connected role:Secondary\\n` +
            `exists device name:r0 volume:0 minor:2 disk:UpToDate client:no quorum:yes size:${N} read:${N} written:${N} al-writes:${N}\\n` +
            `exists peer-device name:r0 peer-node-id:1 conn-name:beta volume:0 replication:Established peer-disk:UpToDate peer-client:no resync-suspended:no received:${N} sent:${N} out-of-sync:0 pending:0 unacked:0\\n` +
            `exists -\\n$`,
        ),
      );

      await until(
        "the stream saw the end of the resync",
        async () => /replication:Established/.test(stream.split("exists -\n")[1] ?? ""),
        10_000,
      );
      events.kill("SIGTERM");
      const [, changes] = stream.split("exists -\n");
      const lines = changes.trim().split("\n");
      const at = (re: RegExp) => lines.findIndex((l) => re.test(l));
      // The peer's role may come in the same poll as the connection or in a later one.
      const connected = at(
        /^change connection name:r0 peer-node-id:1 conn-name:beta connection:Connected( |$)/,
      );
      assert.ok(
        at(
          /^change connection name:r0 peer-node-id:1 conn-name:beta (connection:Connected )?role:Secondary$/,
        ) >= connected,
        `events:\n${changes}`,
      );
      const syncSource = at(
        /^change peer-device name:r0 peer-node-id:1 conn-name:beta volume:0 replication:SyncSource peer-disk:Inconsistent received:\d+ sent:\d+ out-of-sync:\d+ pending:\d+ unacked:\d+/,
      );
      const progress = at(
        /^change peer-device name:r0 peer-node-id:1 conn-name:beta volume:0 received:\d+ sent:\d+ out-of-sync:\d+/,
      );
      // The peer's disk turns UpToDate with the end of the resync or in the next event (P_STATE after it).
      const established = at(
        /^change peer-device name:r0 peer-node-id:1 conn-name:beta volume:0 replication:Established /,
      );
      const upToDate = at(
        /^change peer-device name:r0 peer-node-id:1 conn-name:beta volume:0 .*peer-disk:UpToDate /,
      );
      assert.ok(upToDate >= established, `events:\n${changes}`);
      assert.ok(connected >= 0 && syncSource >= 0 && established > syncSource, `events:\n${changes}`);
      assert.ok(progress > syncSource && progress < established, `out-of-sync progress lines:\n${changes}`);

      // On a terminal (script(1) gives it one) wait-sync draws cli-progress's bar with speed and ETA.
      await pair.admOk("alpha", "invalidate-remote");
      const cmd = [process.execPath, CLI, "drbdadm", "-s", pair.nodes.alpha.sock, "wait-sync", "r0"].join(
        " ",
      );
      const tty = await run("script", ["-qec", cmd, "/dev/null"], 120_000);
      assert.equal(tty.code, 0, tty.stdout);
      assert.match(
        tty.stdout,
        /r0 (SyncSource|PausedSyncS) \[[=-]{40}\] \d+% \| [\d.]+ [KMG]i?B left \| [\d.]+ MiB\/s \| ETA \d\d:\d\d/,
      );
      assert.match(tty.stdout, /r0: in sync \(UpToDate\/UpToDate\)/);

      const usage = await cli("alpha", "cstate");
      assert.equal(usage.code, 2);
      assert.match(usage.stderr, /cstate needs a resource name/);
      const unknown = await cli("alpha", "role", "r9");
      assert.equal(unknown.code, 1);
      assert.match(unknown.stderr, /r9/);
    },
  );
});
