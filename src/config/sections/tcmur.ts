/**
 * [TCMUR]: tcmu-runner style handler devices in the device tree (src/bdev/tcmur builds them).
 */
import type { IniSection } from "../ini.js";
import { type Located, Reader, walk } from "../section_reader.js";

/** [TCMUR]: `TCMUR <minor> <name> <cfgstring> [options...]` (src/devtree builds these). */
export interface TcmurBdevSpec extends Located {
  readonly kind: "tcmur";
  readonly minor: number;
  readonly name: string;
  /** The whole tcmu-runner config string, e.g. "/file//tmp/tcmur_file00". */
  readonly cfgString: string;
  /** Its first segment, the handler name ("file", "ram"). */
  readonly handler: string;
  /** Words after the config string, left for the TCMUR module to interpret. */
  readonly extra: readonly string[];
}

export function readTcmur(r: Reader, sec: IniSection): TcmurBdevSpec[] {
  const out: TcmurBdevSpec[] = [];
  walk(r, sec, {
    TCMUR: {
      repeat: true,
      apply: (e) => {
        const v = e.values;
        if (v.length < 3)
          throw r.error(e.line, `TCMUR expects <minor> <name> <cfgstring>, e.g. TCMUR 0 ram_a /ram/tmp/x`);
        // The reference SPDK config's rule: "tcmur-minor-number should be less than 256 and unique
        // across TCMUR instances".
        const minor = r.intValue(e.line, "TCMUR minor", v[0], 0, 255);
        const dup = out.find((t) => t.minor === minor);
        if (dup) throw r.error(e.line, `TCMUR minor ${minor} is already used at line ${dup.line}`);
        const m = /^\/([A-Za-z0-9_]+)\//.exec(v[2]);
        if (!m)
          throw r.error(e.line, `TCMUR config string expects /<handler>/<handler config>, got "${v[2]}"`);
        out.push({
          kind: "tcmur",
          minor,
          name: v[1],
          cfgString: v[2],
          handler: m[1],
          extra: v.slice(3),
          file: r.file,
          line: e.line,
        });
      },
    },
  });
  return out;
}
