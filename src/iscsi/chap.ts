/**
 * CHAP authentication in the iSCSI security stage (RFC 7143 §12.1.3, RFC 1994): MD5 only
 * (CHAP_A=5), one-way and mutual. Binary values may be hex (0x…) or base64 (0b…). A challenge
 * the initiator reflects back at us is refused (RFC 7143 §12.1.3 last paragraphs).
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import type { AuthPolicy, ChapSecret } from "./options.js";
import { LoginStatus, loginFailure, type KeyValue } from "./param.js";

const CHAP_MD5 = "5";
const CHALLENGE_BYTES = 16;

/** Decode a CHAP binary value (RFC 7143 §6.1: hex with 0x, base64 with 0b). */
export function decodeChapBinary(value: string): Buffer | undefined {
  if (/^0[xX][0-9a-fA-F]+$/.test(value)) {
    let hex = value.slice(2);
    if (hex.length % 2) hex = "0" + hex;
    return Buffer.from(hex, "hex");
  }
  if (/^0[bB][A-Za-z0-9+/]+=*$/.test(value)) return Buffer.from(value.slice(2), "base64");
  return undefined;
}

export function chapResponse(id: number, secret: string, challenge: Buffer): Buffer {
  return createHash("md5")
    .update(Buffer.from([id & 0xff]))
    .update(Buffer.from(secret, "utf8"))
    .update(challenge)
    .digest();
}

type Method = "None" | "CHAP";

/** One connection's security stage. Feed each request's keys; read `authenticated`. */
export class ChapAuthenticator {
  authenticated = false;
  method: Method | undefined;
  private state: "method" | "algorithm" | "response" | "done" = "method";
  private id = 0;
  private challenge = Buffer.alloc(0);

  constructor(
    private readonly policy: AuthPolicy,
    private readonly secrets: readonly ChapSecret[],
    private readonly what: string,
  ) {}

  /** Methods this policy accepts, in preference order. */
  private supported(): Method[] {
    if (this.policy.disableChap) return ["None"];
    if (this.policy.requireChap || this.policy.mutualChap) return ["CHAP"];
    return ["CHAP", "None"];
  }

  /** The challenge is out; the next keys should be the initiator's CHAP_N and CHAP_R. */
  get awaitingResponse(): boolean {
    return this.state === "response";
  }

  /** True when this policy lets the initiator skip the security stage. */
  get mayBeSkipped(): boolean {
    return this.supported().includes("None");
  }

  /** Handle the security keys of one Login Request; returns the keys to answer with. */
  step(keys: ReadonlyMap<string, string>): KeyValue[] {
    const out: KeyValue[] = [];
    if (this.state === "method") {
      const offered = keys.get("AuthMethod");
      if (offered === undefined) {
        if (keys.has("CHAP_A") || keys.has("CHAP_N")) throw this.fail("CHAP keys before AuthMethod");
        return out;
      }
      const mine = this.supported();
      const pick = offered.split(",").find((m): m is Method => (mine as string[]).includes(m));
      if (pick === undefined)
        throw this.fail(`AuthMethod ${offered} not acceptable (target needs ${mine.join(",")})`);
      this.method = pick;
      out.push(["AuthMethod", pick]);
      if (pick === "None") {
        this.authenticated = true;
        this.state = "done";
        return out;
      }
      this.state = "algorithm";
      if (!keys.has("CHAP_A")) return out;
    }
    if (this.state === "algorithm") {
      const algs = keys.get("CHAP_A");
      if (algs === undefined) {
        if (keys.size === 0) return out;
        throw this.fail("expected CHAP_A");
      }
      if (!algs.split(",").includes(CHAP_MD5)) throw this.fail(`CHAP_A=${algs}: only MD5 (5) is supported`);
      this.id = randomBytes(1)[0];
      this.challenge = randomBytes(CHALLENGE_BYTES);
      out.push(
        ["CHAP_A", CHAP_MD5],
        ["CHAP_I", String(this.id)],
        ["CHAP_C", "0x" + this.challenge.toString("hex")],
      );
      this.state = "response";
      return out;
    }
    if (this.state === "response") {
      const user = keys.get("CHAP_N");
      const resp = keys.get("CHAP_R");
      if (user === undefined || resp === undefined) throw this.fail("expected CHAP_N and CHAP_R");
      const got = decodeChapBinary(resp);
      if (!got) throw this.fail("CHAP_R is not a hex or base64 value");
      const secret = this.secrets.find((s) => s.user === user);
      if (!secret) throw this.fail(`unknown CHAP user ${user}`);
      const want = chapResponse(this.id, secret.secret, this.challenge);
      if (got.length !== want.length || !timingSafeEqual(got, want))
        throw this.fail(`wrong CHAP response for ${user}`);
      const theirId = keys.get("CHAP_I");
      const theirChallenge = keys.get("CHAP_C");
      if (theirId !== undefined || theirChallenge !== undefined) {
        if (theirId === undefined || theirChallenge === undefined)
          throw this.fail("mutual CHAP needs CHAP_I and CHAP_C");
        const id = Number(theirId);
        const ch = decodeChapBinary(theirChallenge);
        if (!/^\d+$/.test(theirId) || id > 255 || !ch || ch.length === 0)
          throw this.fail("malformed CHAP_I/CHAP_C");
        if (ch.equals(this.challenge)) throw this.fail("initiator reflected the target's CHAP challenge");
        if (secret.muser === undefined || secret.msecret === undefined)
          throw this.fail(`no mutual secret for ${user}`);
        out.push(
          ["CHAP_N", secret.muser],
          ["CHAP_R", "0x" + chapResponse(id, secret.msecret, ch).toString("hex")],
        );
      } else if (this.policy.mutualChap) {
        throw this.fail("mutual CHAP required but the initiator sent no challenge");
      }
      this.authenticated = true;
      this.state = "done";
      return out;
    }
    return out;
  }

  private fail(why: string): Error {
    return loginFailure(LoginStatus.authFailure, `${this.what}: CHAP: ${why}`);
  }
}
