/**
 * How a config section is read: the file and line every model object keeps, a Reader that turns
 * values into numbers, booleans and block sizes with errors naming file and line, and walk(), which
 * routes each key of a section to its rule and rejects unknown or repeated keys.
 */
import { ConfigError, type ConfigNotice } from "./errors.js";
import type { IniEntry, IniSection } from "./ini.js";

export interface Located {
  /** File and line of the config line this came from, for errors found later (at start-up). */
  readonly file: string;
  readonly line: number;
}

export type Mutable<T> = { -readonly [K in keyof T]: T[K] };

export class Reader {
  readonly notices: ConfigNotice[] = [];
  constructor(readonly file: string) {}

  error(line: number, what: string): ConfigError {
    return new ConfigError(this.file, line, what);
  }

  notice(line: number, message: string): void {
    this.notices.push({ file: this.file, line, message });
  }

  /** Exactly one value. */
  one(e: IniEntry, what: string): string {
    if (e.values.length !== 1) {
      throw this.error(
        e.line,
        `${e.key} expects ${what}, got ${e.values.length === 0 ? "nothing" : `${e.values.length} values`}`,
      );
    }
    return e.values[0];
  }

  int(e: IniEntry, min: number, max: number): number {
    const v = this.one(e, `an integer from ${min} to ${max}`);
    return this.intValue(e.line, e.key, v, min, max);
  }

  intValue(line: number, key: string, v: string, min: number, max: number): number {
    if (!/^[0-9]+$/.test(v))
      throw this.error(line, `${key} expects an integer from ${min} to ${max}, got "${v}"`);
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < min || n > max) {
      throw this.error(line, `${key} expects an integer from ${min} to ${max}, got ${v}`);
    }
    return n;
  }

  bool(e: IniEntry): boolean {
    const v = this.one(e, "Yes or No");
    if (/^yes$/i.test(v)) return true;
    if (/^no$/i.test(v)) return false;
    throw this.error(e.line, `${e.key} expects Yes or No, got "${v}"`);
  }

  blockSize(line: number, key: string, v: string): number {
    const n = this.intValue(line, key, v, 512, 65536);
    if (n & (n - 1)) throw this.error(line, `${key} expects a power of two from 512 to 65536, got ${v}`);
    return n;
  }

  /** "AuthGroup3" → 3; "PortalGroup1" → 1 (with prefix "PortalGroup"). */
  groupRef(line: number, key: string, v: string, prefix: string): number {
    const m = new RegExp(`^${prefix}([0-9]+)$`).exec(v);
    if (!m) throw this.error(line, `${key} expects ${prefix}<N>, got "${v}"`);
    return this.intValue(line, key, m[1], 1, 65535);
  }
}

export interface KeyRule {
  /** May appear more than once. */
  readonly repeat?: boolean;
  readonly apply: (e: IniEntry) => void;
}

/**
 * Walk a section's entries: known keys go to their rule, keys in `ignored` are accepted with a notice,
 * anything else is an error naming the key and the section. Non-repeatable keys given twice are errors.
 */
export function walk(
  r: Reader,
  sec: IniSection,
  rules: Record<string, KeyRule>,
  ignored: readonly string[] = [],
  dynamic?: (e: IniEntry) => boolean,
): void {
  const seen = new Map<string, number>();
  for (const e of sec.entries) {
    const rule = Object.hasOwn(rules, e.key) ? rules[e.key] : undefined;
    if (rule) {
      const prev = seen.get(e.key);
      if (prev !== undefined && !rule.repeat) {
        throw r.error(e.line, `${e.key} given twice in [${sec.name}] (first at line ${prev})`);
      }
      seen.set(e.key, e.line);
      rule.apply(e);
      continue;
    }
    if (dynamic?.(e)) continue;
    if (e.key === "Comment") continue;
    if (ignored.includes(e.key)) {
      r.notice(e.line, `[${sec.name}] ${e.key} is an SPDK setting with no meaning for usertgt; ignored`);
      continue;
    }
    const known = Object.keys(rules).join(", ");
    throw r.error(e.line, `unknown key ${e.key} in [${sec.name}]; expected one of: ${known}`);
  }
}
