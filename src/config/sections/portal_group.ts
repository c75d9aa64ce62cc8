/**
 * [PortalGroupN]: the portals (address and port) a target listens on (SPDK lib/iscsi/portal_grp.c).
 */
import type { Portal, PortalGroupConfig } from "../../iscsi/options.js";
import type { IniSection } from "../ini.js";
import { Reader, walk } from "../section_reader.js";
import { parsePortal } from "./iscsi_values.js";

export function readPortalGroup(
  r: Reader,
  sec: IniSection,
  tag: number,
  seen: Map<string, string>,
): PortalGroupConfig {
  const portals: Portal[] = [];
  walk(r, sec, {
    Portal: {
      repeat: true,
      apply: (e) => {
        if (e.values.length !== 2)
          throw r.error(e.line, `Portal expects <label> <host>[:<port>], e.g. Portal DA1 127.0.0.1:3260`);
        const p = parsePortal(r, e.line, e.values[1]);
        // Port 0 is ephemeral: every such portal gets its own port.
        const key = `${p.host}:${p.port}`;
        const prev = seen.get(key);
        if (p.port !== 0 && prev !== undefined) {
          throw r.error(
            e.line,
            prev === sec.name
              ? `portal ${key} is listed twice in [${sec.name}]`
              : `portal ${key} is also in [${prev}]`,
          );
        }
        seen.set(key, sec.name);
        portals.push(p);
      },
    },
  });
  if (portals.length === 0) throw r.error(sec.line, `[${sec.name}] needs at least one Portal line`);
  if (portals.length > 1024) throw r.error(sec.line, `[${sec.name}] has more than 1024 portals`);
  return { tag, portals };
}
