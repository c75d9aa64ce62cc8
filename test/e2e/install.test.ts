/**
 * Install as an admin would: `npm pack` the repository, `npm install -g --prefix EMPTY` the tarball (its
 * dependencies from the npm registry, or npm's cache with --prefer-offline), then run the installed
 * `usertgt` from a directory that has no source tree: `--version`, `serve`, and libiscsi's `iscsi-ls`
 * discovers the LUN. The pack skips its scripts because this test runs from the already built dist/
 * (prepack would rebuild it underneath the running tests); the install runs the package's own
 * install script, which builds the native helper.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { DEFAULT_CONFIG_TEXT } from "../../src/config/default.js";
import { cleanup, makeTempDir, run } from "./harness.js";
import { startService } from "./service_fixture.js";

/** dist/test/e2e → the repository root. */
const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const PORT = 3530;
const IQN = "iqn.2016-06.io.spdk:disk1";

function npm(args: readonly string[], cwd: string, timeoutMs = 300_000, env: NodeJS.ProcessEnv = {}) {
  return new Promise<{ code: number | null; out: string }>((resolve, reject) => {
    const child = spawn("npm", args, {
      cwd,
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (out += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.once("error", reject);
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

describe("npm pack → npm install -g --prefix → usertgt", () => {
  let dir: string;
  let bin: string;
  let installed: string;

  before(async () => {
    dir = await makeTempDir("install");
    // prepack's last step (the build itself is the dist/ these tests run from): keep the native
    // helpers as prebuilt copies for machines without a compiler.
    const saved = await run(
      process.execPath,
      [join(ROOT, "native", "build.mjs"), "--save-prebuilt"],
      300_000,
    );
    assert.equal(saved.code, 0, saved.stderr);
    const pack = await npm(["pack", "--ignore-scripts", "--pack-destination", dir], ROOT);
    assert.equal(pack.code, 0, pack.out);
    const tarballs = (await readdir(dir)).filter((f) => /^usertgt-.*\.tgz$/.test(f));
    assert.equal(tarballs.length, 1, `one tarball in ${dir}: ${tarballs.join(", ")}`);
    const prefix = join(dir, "prefix");
    const inst = await npm(
      [
        "install",
        "-g",
        "--prefix",
        prefix,
        "--prefer-offline",
        "--no-audit",
        "--no-fund",
        join(dir, tarballs[0]),
      ],
      dir,
    );
    assert.equal(inst.code, 0, inst.out);
    bin = join(prefix, "bin", "usertgt");
    installed = join(prefix, "lib", "node_modules", "usertgt");
  });
  after(async () => {
    await cleanup(dir);
  });

  it("ships the build and the native sources, not the tests or the TypeScript", async () => {
    assert.ok(existsSync(join(installed, "dist", "src", "cli", "main.js")));
    assert.ok(existsSync(join(installed, "native", "binding.gyp")));
    assert.ok(
      existsSync(join(installed, "native", "prebuilt", `linux-${process.arch}`, "usertgt_sd_notify.node")),
    );
    assert.ok(existsSync(join(installed, "systemd", "usertgt.service")));
    assert.equal(existsSync(join(installed, "src")), false, "no TypeScript sources");
    assert.equal(existsSync(join(installed, "dist", "test")), false, "no test build");
    assert.equal(existsSync(join(installed, "dist", "src", "cli", "rpc_command.test.js")), false);
    // The install script built the native helper (a compiler and node's headers are on this machine).
    assert.ok(existsSync(join(installed, "native", "build", "Release", "usertgt_native.node")));
  });

  it("without a compiler the install uses the prebuilt native helpers", async () => {
    const tarball = (await readdir(dir)).find((f) => /^usertgt-.*\.tgz$/.test(f)) as string;
    const prefix = join(dir, "prefix-nocc");
    const inst = await npm(
      [
        "install",
        "-g",
        "--prefix",
        prefix,
        "--prefer-offline",
        "--no-audit",
        "--no-fund",
        "--foreground-scripts",
        join(dir, tarball),
      ],
      dir,
      300_000,
      { CC: "/bin/false", CXX: "/bin/false" },
    );
    assert.equal(inst.code, 0, inst.out);
    // The list names every prebuilt addon (usertgt_rbd.node too where librbd was there at pack time).
    const used = /using the prebuilt (.*)$/m.exec(inst.out)?.[1] ?? "";
    for (const addon of ["usertgt_native.node", "usertgt_sd_notify.node"])
      assert.ok(used.split(", ").includes(addon), `prebuilt ${addon} used: ${inst.out}`);
    const addon = join(
      prefix,
      "lib",
      "node_modules",
      "usertgt",
      "native",
      "build",
      "Release",
      "usertgt_sd_notify.node",
    );
    const load = await run(process.execPath, [
      "-e",
      `console.log(typeof require(${JSON.stringify(addon)}).notify)`,
    ]);
    assert.equal(load.stdout.trim(), "function", load.stderr);
  });

  it("usertgt --version prints the package's version", async () => {
    const pkg = JSON.parse(await readFile(join(ROOT, "package.json"), "utf8")) as { version: string };
    const r = await run(bin, ["--version"], 20_000);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), pkg.version);
  });

  it("usertgt serve from the prefix exports a LUN that iscsi-ls discovers", async () => {
    const config = join(dir, "usertgt.conf");
    await writeFile(config, DEFAULT_CONFIG_TEXT.replace("127.0.0.1:3260", `127.0.0.1:${PORT}`));
    const server = await startService(
      ["serve", "-c", config, "--no-rpc", "--no-fuse", "--log-level", "warn"],
      {
        bin,
        cwd: dir,
      },
    );
    try {
      const ls = await run("iscsi-ls", ["-s", `iscsi://127.0.0.1:${PORT}`]);
      assert.equal(ls.code, 0, ls.stderr);
      assert.match(
        ls.stdout,
        new RegExp(`Target:${IQN.replace(/\./g, "\\.")} Portal:127\\.0\\.0\\.1:${PORT}`),
      );
      assert.match(ls.stdout, /Lun:0\s+Type:DIRECT_ACCESS/);
    } finally {
      assert.equal(await server.stop(), 0, server.stderr());
    }
    assert.match(server.stderr(), /^usertgt: stopped$/m);
  });
});
