/**
 * `prepare`: build dist/ from the TypeScript sources. npm runs it after `npm ci` / `npm install` in a
 * clone and before `npm pack`, so the README's commands work right after the set-up step and the
 * tarball carries the build. `npm install -g .` from a fresh clone runs it too, but without installing
 * the clone's devDependencies (the compiler): then they are installed here first, with npm's global
 * settings taken out of the environment so that the nested install stays local to the clone.
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const tsc = join(root, "node_modules", "typescript", "bin", "tsc");

function run(cmd, args, env = process.env) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: "inherit", env });
  if (r.status !== 0) {
    console.error(
      `usertgt prepare: ${[cmd, ...args].join(" ")} failed (${r.error?.message ?? `exit ${r.status}`})`,
    );
    process.exit(1);
  }
}

if (!existsSync(tsc)) {
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !/^npm_config_(global|prefix|location)$/i.test(k)),
  );
  const npmCli = process.env.npm_execpath;
  const [cmd, pre] = npmCli && npmCli.endsWith(".js") ? [process.execPath, [npmCli]] : ["npm", []];
  // --ignore-scripts: this very script is the clone's prepare; the native helper is built below.
  run(cmd, [...pre, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], env);
  run(process.execPath, [join(root, "native", "build.mjs")]);
}
run(process.execPath, [tsc, "-p", join(root, "tsconfig.json")]);
