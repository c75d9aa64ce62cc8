/**
 * Build the optional native addon (native/*.c) with node-gyp during `npm ci`.
 * It never fails the install: without it the AIO block device writes zeroes for UNMAP, reports no
 * thin provisioning, cannot export block devices, and I/O runs on Node's thread pool. Without
 * liburing-dev the addon is built without the io_uring engine (thread-pool fallback at run time).
 * Node's own headers are used (no download) when they are installed next to the node binary.
 */
import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const fallback =
  "usertgt: native addon not built; AIO unmap writes zeroes, block devices cannot be exported, I/O uses the thread pool";

if (process.platform !== "linux" || process.env.USERTGT_NO_NATIVE) {
  console.warn(fallback);
  process.exit(0);
}
if (!existsSync("/usr/include/liburing.h")) {
  console.warn(
    "usertgt: liburing-dev is not installed: building without the io_uring engine (AIO and TCMUR file I/O use the thread pool; apt-get install liburing-dev, then npm ci)",
  );
}
const args = ["rebuild", "--directory", here];
const prefix = dirname(dirname(process.execPath));
if (!process.env.npm_config_nodedir && existsSync(join(prefix, "include", "node", "node_api.h"))) {
  args.push(`--nodedir=${prefix}`);
}
// npm tells its scripts where its bundled node-gyp is; run by hand, look next to npm.
const bundled = join(prefix, "lib", "node_modules", "npm", "node_modules", "node-gyp", "bin", "node-gyp.js");
const gyp = process.env.npm_config_node_gyp ?? (existsSync(bundled) ? bundled : undefined);
const result = gyp
  ? spawnSync(process.execPath, [gyp, ...args], { stdio: "inherit", timeout: 300_000 })
  : spawnSync("node-gyp", args, { stdio: "inherit", timeout: 300_000 });
// Prebuilt helpers: `node native/build.mjs --save-prebuilt` (run before `npm pack`) keeps a copy of what was
// built in prebuilt/linux-<arch>/; an install on a machine without a compiler uses them. Node-API modules
// load in any later Node; the C library must be no older than the build machine's (Debian 12, glibc 2.36).
const release = join(here, "build", "Release");
const prebuilt = join(here, "prebuilt", `linux-${process.arch}`);
if (result.status === 0) {
  if (process.argv.includes("--save-prebuilt")) {
    mkdirSync(prebuilt, { recursive: true });
    for (const f of readdirSync(release).filter((n) => n.endsWith(".node")))
      copyFileSync(join(release, f), join(prebuilt, f));
  }
  process.exit(0);
}
const why = `node-gyp ${result.error?.message ?? `exit ${result.status}`}`;
const copies = existsSync(prebuilt) ? readdirSync(prebuilt).filter((n) => n.endsWith(".node")) : [];
const missing = copies.filter((f) => !existsSync(join(release, f)));
if (missing.length > 0) {
  mkdirSync(release, { recursive: true });
  for (const f of missing) copyFileSync(join(prebuilt, f), join(release, f));
  console.warn(`usertgt: native helpers not built (${why}); using the prebuilt ${missing.join(", ")}`);
} else {
  console.warn(`${fallback} (${why})`);
}
process.exit(0);
