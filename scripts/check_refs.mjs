// Fails when product code or docs cite a tracker issue ("issue #4", "Issue 3"): readers of the code
// have no tracker, so a comment cites the standard or says what it means instead.
// Usage: node scripts/check_refs.mjs [DIR...]   (default: src docs README.md)
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";

const ISSUE_REF = /\bissue #?\d+/i;
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
      }
    });
}
if (found > 0) {
  console.error(`${found} issue reference(s): cite the standard or say what is meant instead.`);
  process.exit(1);
}
