/**
 * The systemd unit (systemd/usertgt.service) and the readiness protocol behind it:
 * - `systemd-analyze verify` accepts the unit as shipped (its ExecStart path pointed at an executable
 *   that exists here, since verify checks that);
 * - with NOTIFY_SOCKET set, as systemd sets it for Type=notify, serve sends READY=1 only once its portal
 *   accepts connections, RELOADING=1 then READY=1 on SIGHUP (ExecReload), STOPPING=1 on SIGTERM, and
 *   stops cleanly well inside the unit's TimeoutStopSec. The receiving end is an abstract AF_UNIX
 *   datagram socket held by python3 (Node cannot receive datagrams on AF_UNIX).
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { chmod, readFile, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { DEFAULT_CONFIG_TEXT } from "../../src/config/default.js";
import { cleanup, makeTempDir, run } from "./harness.js";
import { startService } from "./service_fixture.js";

const UNIT = fileURLToPath(new URL("../../../systemd/usertgt.service", import.meta.url));
const PORT = 3532;

const RECEIVER = `
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("\\0" + sys.argv[1][1:])
print(json.dumps("bound"), flush=True)
while True:
    print(json.dumps(s.recv(8192).decode()), flush=True)
`;

/** The datagrams an abstract notify socket received, in order. */
class NotifyReceiver {
  readonly messages: string[] = [];
  private waiters: (() => void)[] = [];
  private constructor(private readonly child: ChildProcessWithoutNullStreams) {
    let buf = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        this.messages.push(JSON.parse(buf.slice(0, nl)) as string);
        buf = buf.slice(nl + 1);
        for (const w of this.waiters.splice(0)) w();
      }
    });
  }

  static async start(name: string): Promise<NotifyReceiver> {
    const r = new NotifyReceiver(spawn("python3", ["-c", RECEIVER, name]));
    await r.waitFor((m) => m === "bound", 10_000);
    return r;
  }

  /** Resolves with the first message (from the start) that matches. */
  async waitFor(match: (m: string) => boolean, timeoutMs = 10_000, from = 0): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.messages.findIndex((m, idx) => idx >= from && match(m));
      if (i >= 0) return i;
      if (Date.now() > deadline)
        throw new Error(`no such notification; got ${JSON.stringify(this.messages)}`);
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 200);
      });
    }
  }

  stop(): void {
    this.child.kill("SIGKILL");
  }
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, "127.0.0.1");
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

describe("systemd unit", () => {
  let dir: string;
  before(async () => {
    dir = await makeTempDir("systemd");
  });
  after(async () => {
    await cleanup(dir);
  });

  it("systemd-analyze verify accepts systemd/usertgt.service", async () => {
    const exe = join(dir, "usertgt");
    await writeFile(exe, "#!/bin/sh\nexit 0\n");
    await chmod(exe, 0o755);
    const unit = (await readFile(UNIT, "utf8")).replaceAll("/usr/local/bin/usertgt", exe);
    assert.notEqual(unit, await readFile(UNIT, "utf8"), "the unit runs /usr/local/bin/usertgt");
    const path = join(dir, "usertgt.service");
    await writeFile(path, unit);
    const r = await run("systemd-analyze", ["verify", path]);
    const about = (r.stdout + r.stderr)
      .split("\n")
      .filter((l) => l.includes("usertgt"))
      .join("\n");
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(about, "", "no warning about the unit");
    assert.match(unit, /^Type=notify$/m);
    assert.match(unit, /^ExecReload=\/bin\/kill -HUP \$MAINPID$/m);
  });

  it("READY=1 when the portal listens, RELOADING=1/READY=1 on SIGHUP, STOPPING=1 and a clean stop on SIGTERM", async () => {
    const name = `@usertgt-test-${process.pid}`;
    const receiver = await NotifyReceiver.start(name);
    const config = join(dir, "usertgt.conf");
    await writeFile(config, DEFAULT_CONFIG_TEXT.replace("127.0.0.1:3260", `127.0.0.1:${PORT}`));
    try {
      const server = await startService(
        ["serve", "-c", config, "--no-rpc", "--no-fuse", "--log-level", "warn"],
        {
          env: { ...process.env, NOTIFY_SOCKET: name },
        },
      );
      try {
        const ready = await receiver.waitFor((m) => m.split("\n").includes("READY=1"));
        assert.match(receiver.messages[ready], new RegExp(`^MAINPID=${server.child.pid}$`, "m"));
        assert.match(receiver.messages[ready], /^STATUS=serving: 1 portal$/m);
        assert.ok(await accepts(PORT), "the portal accepts connections once READY=1 was sent");

        server.child.kill("SIGHUP");
        const reloading = await receiver.waitFor((m) => m.includes("RELOADING=1"), 10_000, ready + 1);
        assert.match(receiver.messages[reloading], /^MONOTONIC_USEC=\d+$/m);
        await receiver.waitFor((m) => m.split("\n").includes("READY=1"), 10_000, reloading + 1);
        assert.match(server.stderr(), /SIGHUP: reloaded .*usertgt\.conf/);
        assert.ok(await accepts(PORT), "still serving after the reload");
      } finally {
        const t0 = Date.now();
        assert.equal(await server.stop(), 0, server.stderr());
        const unit = await readFile(UNIT, "utf8");
        const timeoutStop = Number(/^TimeoutStopSec=(\d+)$/m.exec(unit)?.[1]);
        assert.ok(Date.now() - t0 < (timeoutStop * 1000) / 4, `stopped in ${Date.now() - t0} ms`);
      }
      await receiver.waitFor((m) => m.startsWith("STOPPING=1"));
      assert.equal(
        receiver.messages.filter((m) => m.startsWith("STOPPING=1")).length,
        1,
        JSON.stringify(receiver.messages),
      );
    } finally {
      receiver.stop();
    }
  });

  it("a NOTIFY_SOCKET nobody listens on is reported, and the server still serves", async () => {
    const config = join(dir, "usertgt.conf");
    await writeFile(config, DEFAULT_CONFIG_TEXT.replace("127.0.0.1:3260", `127.0.0.1:${PORT + 1}`));
    const server = await startService(
      ["serve", "-c", config, "--no-rpc", "--no-fuse", "--log-level", "warn"],
      {
        env: { ...process.env, NOTIFY_SOCKET: join(dir, "nobody.sock") },
      },
    );
    try {
      assert.match(server.stderr(), /warning: sd_notify to .*nobody\.sock: errno \d+/);
      assert.ok(await accepts(PORT + 1));
    } finally {
      assert.equal(await server.stop(), 0, server.stderr());
    }
  });
});
