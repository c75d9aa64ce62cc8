/**
 * [InitiatorGroupN]: initiator names and netmasks allowed to log in (SPDK lib/iscsi/init_grp.c).
 */
import type { InitiatorGroupConfig } from "../../iscsi/options.js";
import type { IniSection } from "../ini.js";
import { Reader, walk } from "../section_reader.js";
import { checkNetmask } from "./iscsi_values.js";

export function readInitiatorGroup(r: Reader, sec: IniSection, tag: number): InitiatorGroupConfig {
  const initiators: string[] = [];
  const netmasks: string[] = [];
  walk(r, sec, {
    InitiatorName: {
      repeat: true,
      apply: (e) => {
        if (e.values.length === 0)
          throw r.error(e.line, `InitiatorName expects ANY, an initiator name or !name`);
        for (const v of e.values) {
          // SPDK treats ALL as ANY (lib/iscsi/init_grp.c).
          const name = /^(any|all)$/i.test(v) ? "ANY" : v;
          if (name === "!" || /[\s]/.test(name))
            throw r.error(e.line, `InitiatorName: "${v}" is not an initiator name`);
          initiators.push(name);
        }
      },
    },
    Netmask: {
      repeat: true,
      apply: (e) => {
        if (e.values.length === 0) throw r.error(e.line, `Netmask expects ANY, an address or a CIDR`);
        for (const v of e.values) netmasks.push(checkNetmask(r, e.line, v));
      },
    },
  });
  if (initiators.length === 0)
    throw r.error(sec.line, `[${sec.name}] needs an InitiatorName line (ANY allows all)`);
  if (netmasks.length === 0) throw r.error(sec.line, `[${sec.name}] needs a Netmask line (ANY allows all)`);
  if (initiators.length > 256 || netmasks.length > 256) {
    throw r.error(sec.line, `[${sec.name}] has more than 256 initiator names or netmasks`);
  }
  return { tag, initiators, netmasks };
}
