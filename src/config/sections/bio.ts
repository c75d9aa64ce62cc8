/**
 * [BIO]: block devices over any node of the device tree, with an optional helper run first
 * (src/bdev/bio builds them).
 */
import type { IniSection } from "../ini.js";
import { type Located, Reader, walk } from "../section_reader.js";

/** [BIO]: `BIO <bdev name> <device path> [helper [args...]]` (src/devtree builds these). */
export interface BioBdevSpec extends Located {
  readonly kind: "bio";
  readonly name: string;
  readonly path: string;
  /** The helper command and its arguments, run before the device is opened; empty = none. */
  readonly helper: readonly string[];
}

export function readBio(r: Reader, sec: IniSection): BioBdevSpec[] {
  const out: BioBdevSpec[] = [];
  walk(r, sec, {
    BIO: {
      repeat: true,
      apply: (e) => {
        const v = e.values;
        if (v.length < 2) throw r.error(e.line, `BIO expects <bdev name> <device path> [helper [args...]]`);
        if (!v[1].startsWith("/")) throw r.error(e.line, `BIO device path must be absolute, got "${v[1]}"`);
        out.push({ kind: "bio", name: v[0], path: v[1], helper: v.slice(2), file: r.file, line: e.line });
      },
    },
  });
  return out;
}
