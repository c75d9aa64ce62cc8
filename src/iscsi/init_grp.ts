/**
 * Initiator groups (SPDK's init_grp): which initiator names and which source addresses a target
 * node accepts through a mapping. Names: ANY, an iSCSI name, or !name to deny. Netmasks: ANY, an
 * IPv4 address, an IPv4 CIDR, or an IPv6 address in brackets with an optional /len.
 */
import { isIPv4, isIPv6 } from "node:net";
import type { InitiatorGroupConfig } from "./options.js";

interface Netmask {
  any: boolean;
  v6: boolean;
  /** Address as a bigint (32 or 128 bits) and prefix length. */
  addr: bigint;
  prefix: number;
}

function ipv4ToBigint(a: string): bigint {
  return a.split(".").reduce((acc, part) => (acc << 8n) | BigInt(Number(part)), 0n);
}

function ipv6ToBigint(a: string): bigint {
  let s = a;
  const zone = s.indexOf("%");
  if (zone >= 0) s = s.slice(0, zone);
  // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two hex groups.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (v4) {
    const n = ipv4ToBigint(v4[1]);
    s = s.slice(0, v4.index) + `${(n >> 16n).toString(16)}:${(n & 0xffffn).toString(16)}`;
  }
  const [head, tail] = s.includes("::") ? s.split("::") : [s, undefined];
  const h = head ? head.split(":") : [];
  const t = tail !== undefined && tail !== "" ? tail.split(":") : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill("0"), ...t];
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g || "0", 16)), 0n);
}

/** Parse one Netmask entry; throws an Error naming the entry when it is malformed. */
export function parseNetmask(entry: string): Netmask {
  if (entry.toUpperCase() === "ANY") return { any: true, v6: false, addr: 0n, prefix: 0 };
  const m6 = /^\[([^\]]+)\](?:\/(\d+))?$/.exec(entry);
  if (m6) {
    if (!isIPv6(m6[1])) throw new Error(`netmask ${entry}: not an IPv6 address`);
    const prefix = m6[2] === undefined ? 128 : Number(m6[2]);
    if (prefix > 128) throw new Error(`netmask ${entry}: prefix longer than 128`);
    return { any: false, v6: true, addr: ipv6ToBigint(m6[1]), prefix };
  }
  const [addr, len] = entry.split("/");
  if (!isIPv4(addr))
    throw new Error(`netmask ${entry}: expected ANY, an IPv4 address or CIDR, or [IPv6]/len`);
  const prefix = len === undefined ? 32 : Number(len);
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > 32)
    throw new Error(`netmask ${entry}: bad prefix length`);
  return { any: false, v6: false, addr: ipv4ToBigint(addr), prefix };
}

function matchNetmask(mask: Netmask, address: string): boolean {
  if (mask.any) return true;
  let v6 = isIPv6(address);
  let addr: bigint;
  if (v6) {
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
    if (mapped && !mask.v6) {
      v6 = false;
      addr = ipv4ToBigint(mapped[1]);
    } else {
      addr = ipv6ToBigint(address);
    }
  } else if (isIPv4(address)) {
    addr = ipv4ToBigint(address);
  } else {
    return false;
  }
  if (v6 !== mask.v6) return false;
  const bits = BigInt(v6 ? 128 : 32);
  const shift = bits - BigInt(mask.prefix);
  return addr >> shift === mask.addr >> shift;
}

export class InitiatorGroup {
  readonly tag: number;
  private readonly allow: string[] = [];
  private readonly deny: string[] = [];
  private anyName = false;
  private readonly netmasks: Netmask[];

  constructor(config: InitiatorGroupConfig) {
    this.tag = config.tag;
    for (const raw of config.initiators) {
      const name = raw.trim();
      if (name.toUpperCase() === "ANY" || name.toUpperCase() === "ALL") this.anyName = true;
      else if (name.startsWith("!")) this.deny.push(name.slice(1).toLowerCase());
      else this.allow.push(name.toLowerCase());
    }
    this.netmasks = config.netmasks.map((n) => parseNetmask(n.trim()));
  }

  /** iSCSI names compare case-insensitively (RFC 3722 normalises to lower case). */
  allowsName(initiatorName: string): boolean {
    const n = initiatorName.toLowerCase();
    if (this.deny.includes(n)) return false;
    return this.anyName || this.allow.includes(n);
  }

  allowsAddress(address: string): boolean {
    return this.netmasks.some((m) => matchNetmask(m, address));
  }

  allows(initiatorName: string, address: string): boolean {
    return this.allowsName(initiatorName) && this.allowsAddress(address);
  }
}
