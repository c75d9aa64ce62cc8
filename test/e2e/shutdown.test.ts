/**
 * SIGINT/SIGTERM shut down cleanly — sessions are logged out or dropped, files flushed and
 * closed, exit 0 — even while initiators are connected and I/O is in flight.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { RawInitiator } from "../support/raw_initiator.js";
import { cleanup, makeTempDir, startServer } from "./harness.js";

const IQN = "iqn.2016-06.io.spdk:shutdown";

function config(dir: string, port: number): string {
  return `[Malloc]
  NumberOfLuns 1
  LunSizeInMB 16
[AIO]
  AIO ${join(dir, "disk.img")} AIO0 4096 16
[PortalGroup1]
  Portal P 127.0.0.1:${port}
[InitiatorGroup1]
  InitiatorName ANY
  Netmask 127.0.0.1/32
[TargetNode1]
  TargetName ${IQN}
  Mapping PortalGroup1 InitiatorGroup1
  LUN0 Malloc0
  LUN1 AIO0
`;
}

describe("clean shutdown", () => {
  let dir: string;
  before(async () => {
    dir = await makeTempDir("shutdown");
  });
  after(async () => {
    await cleanup(dir);
  });

  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    it(`${signal} with a logged-in session and iscsi-perf reading: sessions end, exit 0`, async () => {
      const server = await startServer((ports, d) => config(d, ports[0]), { dir });
      const port = server.ports[0];
      const idle = await RawInitiator.connect(port);
      const perf = spawn("iscsi-perf", ["-t", "30", "-m", "16", `iscsi://127.0.0.1:${port}/${IQN}/1`], {
        stdio: "ignore",
      });
      try {
        const login = await idle.login({ targetName: IQN });
        assert.equal(login.statusClass, 0);
        await new Promise((resolve) => setTimeout(resolve, 1500)); // let iscsi-perf log in and get busy
        assert.equal(perf.exitCode, null, "iscsi-perf ended before the signal");

        const started = Date.now();
        const exited = once(server.child, "exit") as Promise<[number | null, NodeJS.Signals | null]>;
        server.child.kill(signal);
        const [code] = await exited;
        assert.equal(code, 0, server.stderr());
        assert.ok(Date.now() - started < 15000, `shutdown took ${Date.now() - started} ms`);
        assert.match(server.stderr(), new RegExp(`^usertgt: ${signal}: shutting down$`, "m"));
        assert.match(server.stderr(), /^usertgt: stopped$/m);
        await idle.waitClosed(2000); // the target ended the idle session
      } finally {
        idle.close();
        if (perf.exitCode === null) perf.kill("SIGKILL");
        await server.stop();
      }
    });
  }
});
