/**
 * Value syntaxes shared by the iSCSI sections: AuthMethod/AuthGroup, digests, portals
 * (`<host>[:<port>[@<cpumask>]]`), netmasks and iSCSI names (RFC 7143 §4.2.7.2).
 */
import { isIP } from "node:net";
import type { AuthPolicy, DigestPolicy, Portal } from "../../iscsi/options.js";
import type { IniEntry } from "../ini.js";
import { Reader } from "../section_reader.js";

export function authPolicy(r: Reader, e: IniEntry): AuthPolicy {
  if (e.values.length === 0) throw r.error(e.line, `${e.key} expects None, Auto, CHAP or Mutual`);
  let disableChap = false;
  let requireChap = false;
  let mutualChap = false;
  // Words apply in order, as SPDK reads them: None/Auto reset, CHAP requires, Mutual implies CHAP.
  for (const v of e.values) {
    switch (v.toLowerCase()) {
      case "none":
        disableChap = true;
        requireChap = mutualChap = false;
        break;
      case "auto":
        disableChap = requireChap = mutualChap = false;
        break;
      case "chap":
        disableChap = false;
        requireChap = true;
        break;
      case "mutual":
        disableChap = false;
        requireChap = mutualChap = true;
        break;
      default:
        throw r.error(e.line, `${e.key} expects None, Auto, CHAP or Mutual, got "${v}"`);
    }
  }
  return { disableChap, requireChap, mutualChap };
}

/** AuthGroup / DiscoveryAuthGroup: AuthGroupN or None. */
export function authGroupRef(r: Reader, e: IniEntry): number | undefined {
  const v = r.one(e, "AuthGroup<N> or None");
  if (/^none$/i.test(v)) return undefined;
  return r.groupRef(e.line, e.key, v, "AuthGroup");
}

export function digestPolicy(r: Reader, e: IniEntry): DigestPolicy {
  if (e.values.length === 0) throw r.error(e.line, `${e.key} expects Header, Data or Auto`);
  let headerRequired = false;
  let dataRequired = false;
  for (const v of e.values) {
    switch (v.toLowerCase()) {
      case "header":
        headerRequired = true;
        break;
      case "data":
        dataRequired = true;
        break;
      case "auto":
        headerRequired = dataRequired = false;
        break;
      default:
        throw r.error(e.line, `${e.key} expects Header, Data or Auto, got "${v}"`);
    }
  }
  return { headerRequired, dataRequired };
}

const HOSTNAME_RE = /^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/;

/** `<host>[:<port>[@<cpumask>]]`, host an IPv4 address, a name, or `[IPv6]`. Port 0 = ephemeral. */
export function parsePortal(r: Reader, line: number, text: string): Portal {
  let rest = text;
  const at = rest.indexOf("@");
  if (at >= 0) {
    r.notice(line, `cpumask "${rest.slice(at + 1)}" of portal ${text} is ignored (SPDK reactor affinity)`);
    rest = rest.slice(0, at);
  }
  let host: string;
  let portText: string | undefined;
  if (rest.startsWith("[")) {
    const close = rest.indexOf("]");
    if (close < 0) throw r.error(line, `Portal expects [IPv6 address]:port, got "${text}"`);
    host = rest.slice(1, close);
    if (isIP(host) !== 6) throw r.error(line, `Portal expects an IPv6 address inside [], got "${host}"`);
    const after = rest.slice(close + 1);
    if (after !== "") {
      if (!after.startsWith(":")) throw r.error(line, `Portal expects ":port" after "]", got "${after}"`);
      portText = after.slice(1);
    }
  } else {
    const colons = rest.split(":").length - 1;
    if (colons > 1)
      throw r.error(line, `Portal: an IPv6 address must be written in brackets, like [::1]:3260`);
    const c = rest.indexOf(":");
    host = c >= 0 ? rest.slice(0, c) : rest;
    if (c >= 0) portText = rest.slice(c + 1);
    if (isIP(host) !== 4 && !HOSTNAME_RE.test(host)) {
      throw r.error(line, `Portal expects an IPv4 address, a host name or [IPv6], got "${host}"`);
    }
  }
  const port = portText === undefined ? 3260 : r.intValue(line, "Portal port", portText, 0, 65535);
  return { host, port };
}

export function checkNetmask(r: Reader, line: number, v: string): string {
  if (/^any$/i.test(v)) return "ANY";
  const slash = v.lastIndexOf("/");
  const addr = slash >= 0 ? v.slice(0, slash) : v;
  const len = slash >= 0 ? v.slice(slash + 1) : undefined;
  let family: number;
  if (addr.startsWith("[") && addr.endsWith("]")) {
    family = isIP(addr.slice(1, -1)) === 6 ? 6 : 0;
  } else {
    family = isIP(addr) === 4 ? 4 : 0;
  }
  if (family === 0) {
    throw r.error(line, `Netmask expects ANY, an IPv4 address or CIDR, or [IPv6][/len], got "${v}"`);
  }
  if (len !== undefined) r.intValue(line, "Netmask prefix length", len, 0, family === 4 ? 32 : 128);
  return v;
}

/** RFC 7143 §4.2.7.2 name forms; iqn names take lower-case letters, digits, '-', '.', ':'. */
export function checkIscsiName(r: Reader, line: number, name: string): void {
  const ok =
    /^iqn\.[0-9]{4}-[0-9]{2}\.[a-z0-9][a-z0-9.\-:]*$/.test(name) ||
    /^eui\.[0-9A-Fa-f]{16}$/.test(name) ||
    /^naa\.([0-9A-Fa-f]{16}|[0-9A-Fa-f]{32})$/.test(name);
  if (!ok || Buffer.byteLength(name) > 223) {
    throw r.error(
      line,
      `TargetName gives the iSCSI name "${name}", which is not a valid iqn./eui./naa. name ` +
        `(RFC 7143 §4.2.7: lower-case letters, digits, '-', '.', ':'; at most 223 bytes)`,
    );
  }
}
