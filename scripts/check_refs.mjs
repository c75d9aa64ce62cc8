// Fails when product code or docs cite a tracker issue ("issue #4", "Issue 3") or "the seed" (the
// project's starting brief): readers of the code have neither, so a comment cites the standard or says
// what it means instead ("the reference deployment" for the SPDK + tcmu-runner + DRBD set-up, README).
// Usage: node scripts/check_refs.mjs [DIR...]   (default: src docs README.md)
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";

const ISSUE_REF = /\bissue #?\d+/i;
const SEED_REF = /\bthe seed\b/i;
const roots = process.argv.length > 2 ? process.argv.slice(2) : ["src", "docs", "README.md"];

/** @param {string} path @returns {string[]} */
function filesUnder(path) {
  if (!statSync(path).isDirectory()) return [path];
  return readdirSync(path, { withFileTypes: true }).flatMap((e) =>
    e.name === "node_modules" ? [] : filesUnder(join(path, e.name)),
  );
}

let found = 0;
for (const file of roots.flatMap(filesUnder)) {
  if (!/\.(ts|mjs|js|md)$/.test(file)) continue;
  readFileSync(file, "utf8")
    .split("\n")
    .forEach((line, i) => {
      if (ISSUE_REF.test(line)) {
        console.error(`${file}:${i + 1}: cites an issue number: ${line.trim()}`);
        found++;
      } else if (SEED_REF.test(line)) {
        console.error(`${file}:${i + 1}: says "the seed": ${line.trim()}`);
        found++;
      }
    });
}
if (found > 0) {
  console.error(
    `${found} reference(s) readers cannot follow: cite the standard or say what is meant instead.`,
  );
  process.exit(1);
}
