/**
 * The AuthFile an [iSCSI] AuthFile key names: `[AuthGroupN]` sections of `Auth "user" "secret"
 * ["muser" "msecret"]` lines (SPDK's CHAP secrets file).
 */
import type { AuthGroup, ChapSecret } from "../../iscsi/options.js";
import type { IniFile } from "../ini.js";
import { Reader, walk } from "../section_reader.js";

export function readAuthFile(ini: IniFile): AuthGroup[] {
  const r = new Reader(ini.file);
  const groups: AuthGroup[] = [];
  for (const sec of ini.sections) {
    const m = /^AuthGroup([0-9]+)$/.exec(sec.name);
    if (!m) throw r.error(sec.line, `expected an [AuthGroup<N>] section in the AuthFile, got [${sec.name}]`);
    const tag = r.intValue(sec.line, "AuthGroup tag", m[1], 1, 65535);
    const secrets: ChapSecret[] = [];
    walk(r, sec, {
      Auth: {
        repeat: true,
        apply: (e) => {
          const v = e.values;
          if (v.length !== 2 && v.length !== 4) {
            throw r.error(e.line, `Auth expects "user" "secret" or "user" "secret" "muser" "msecret"`);
          }
          if (v.some((s) => s === "")) throw r.error(e.line, `Auth: empty user name or secret`);
          if (secrets.some((s) => s.user === v[0])) {
            throw r.error(e.line, `Auth: user "${v[0]}" appears twice in [${sec.name}]`);
          }
          secrets.push(
            v.length === 4
              ? { user: v[0], secret: v[1], muser: v[2], msecret: v[3] }
              : { user: v[0], secret: v[1] },
          );
        },
      },
    });
    if (secrets.length === 0) throw r.error(sec.line, `[${sec.name}] has no Auth lines`);
    groups.push({ tag, secrets });
  }
  return groups;
}
