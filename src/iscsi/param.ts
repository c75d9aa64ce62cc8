/**
 * Text keys (RFC 7143 §6 and §13): parsing of key=value data segments and the negotiation of every
 * login/text key by its rule — list selection, Boolean AND/OR, numerical minimum/maximum, and
 * declaratives — answering Reject, NotUnderstood or Irrelevant where the RFC says so.
 */

export type KeyValue = readonly [key: string, value: string];

/** A negotiation failure that ends the login with the given status (RFC 7143 §11.13.5). */
export class LoginFailure extends Error {
  constructor(
    readonly statusClass: number,
    readonly statusDetail: number,
    message: string,
  ) {
    super(message);
  }
}

/** Status class/detail pairs this target uses (RFC 7143 §11.13.5). */
export const LoginStatus = {
  initiatorError: [0x02, 0x00],
  authFailure: [0x02, 0x01],
  forbidden: [0x02, 0x02],
  notFound: [0x02, 0x03],
  targetRemoved: [0x02, 0x04],
  unsupportedVersion: [0x02, 0x05],
  tooManyConnections: [0x02, 0x06],
  missingParameter: [0x02, 0x07],
  cantIncludeInSession: [0x02, 0x08],
  sessionTypeNotSupported: [0x02, 0x09],
  sessionDoesNotExist: [0x02, 0x0a],
  invalidDuringLogin: [0x02, 0x0b],
  targetError: [0x03, 0x00],
  serviceUnavailable: [0x03, 0x01],
  outOfResources: [0x03, 0x02],
} as const;

export function loginFailure(status: readonly [number, number], message: string): LoginFailure {
  return new LoginFailure(status[0], status[1], message);
}

const MAX_KEY_NAME = 63;
const MAX_VALUE = 8192;

/** Parse a key=value data segment (RFC 7143 §6.1): NUL-separated, the last NUL optional. */
export function parseTextKeys(data: Buffer): KeyValue[] {
  const out: KeyValue[] = [];
  let start = 0;
  while (start < data.length) {
    let end = data.indexOf(0, start);
    if (end < 0) end = data.length;
    if (end > start) {
      const item = data.toString("utf8", start, end);
      const eq = item.indexOf("=");
      if (eq <= 0)
        throw loginFailure(LoginStatus.initiatorError, `text key without '=': "${item.slice(0, 64)}"`);
      const key = item.slice(0, eq);
      const value = item.slice(eq + 1);
      if (key.length > MAX_KEY_NAME)
        throw loginFailure(LoginStatus.initiatorError, `key name too long: ${key.slice(0, 64)}…`);
      if (value.length > MAX_VALUE)
        throw loginFailure(LoginStatus.initiatorError, `value of ${key} too long`);
      out.push([key, value]);
    }
    start = end + 1;
  }
  return out;
}

export function encodeTextKeys(pairs: readonly KeyValue[]): Buffer {
  if (pairs.length === 0) return Buffer.alloc(0);
  return Buffer.from(pairs.map(([k, v]) => `${k}=${v}\0`).join(""), "utf8");
}

/** The operational parameters a session and connection run with (RFC 7143 §13 defaults). */
export interface NegotiatedParams {
  headerDigest: boolean;
  dataDigest: boolean;
  /** The initiator's declared MaxRecvDataSegmentLength: the largest data segment we may send. */
  initiatorMaxRecvDataSegmentLength: number;
  /** Ours: the largest data segment we accept. */
  targetMaxRecvDataSegmentLength: number;
  maxConnections: number;
  initialR2T: boolean;
  immediateData: boolean;
  maxBurstLength: number;
  firstBurstLength: number;
  defaultTime2Wait: number;
  defaultTime2Retain: number;
  maxOutstandingR2T: number;
  dataPDUInOrder: boolean;
  dataSequenceInOrder: boolean;
  errorRecoveryLevel: number;
}

export function defaultParams(targetMrdsl: number): NegotiatedParams {
  return {
    headerDigest: false,
    dataDigest: false,
    initiatorMaxRecvDataSegmentLength: 8192,
    targetMaxRecvDataSegmentLength: targetMrdsl,
    maxConnections: 1,
    initialR2T: true,
    immediateData: true,
    maxBurstLength: 262144,
    firstBurstLength: 65536,
    defaultTime2Wait: 2,
    defaultTime2Retain: 20,
    maxOutstandingR2T: 1,
    dataPDUInOrder: true,
    dataSequenceInOrder: true,
    errorRecoveryLevel: 0,
  };
}

/** What the target offers for each negotiable key. */
export interface TargetOffer {
  readonly headerDigestRequired: boolean;
  readonly dataDigestRequired: boolean;
  readonly maxRecvDataSegmentLength: number;
  readonly maxConnections: number;
  readonly initialR2T: boolean;
  readonly immediateData: boolean;
  readonly maxBurstLength: number;
  readonly firstBurstLength: number;
  readonly defaultTime2Wait: number;
  readonly defaultTime2Retain: number;
  readonly maxOutstandingR2T: number;
  readonly errorRecoveryLevel: number;
}

type NumericKey =
  | "maxConnections"
  | "maxBurstLength"
  | "firstBurstLength"
  | "defaultTime2Wait"
  | "defaultTime2Retain"
  | "maxOutstandingR2T"
  | "errorRecoveryLevel";
type BooleanKey = "initialR2T" | "immediateData" | "dataPDUInOrder" | "dataSequenceInOrder";

interface NumericDef {
  kind: "min" | "max";
  field: NumericKey;
  lo: number;
  hi: number;
  session: boolean;
}
interface BooleanDef {
  kind: "and" | "or";
  field: BooleanKey | null;
  /** The target's value when field is null (keys this target always answers the same way). */
  fixed?: boolean;
  session: boolean;
}

const NUMERIC: Record<string, NumericDef> = {
  MaxConnections: { kind: "min", field: "maxConnections", lo: 1, hi: 65535, session: true },
  MaxBurstLength: { kind: "min", field: "maxBurstLength", lo: 512, hi: 0xffffff, session: true },
  FirstBurstLength: { kind: "min", field: "firstBurstLength", lo: 512, hi: 0xffffff, session: true },
  DefaultTime2Wait: { kind: "max", field: "defaultTime2Wait", lo: 0, hi: 3600, session: true },
  DefaultTime2Retain: { kind: "min", field: "defaultTime2Retain", lo: 0, hi: 3600, session: true },
  MaxOutstandingR2T: { kind: "min", field: "maxOutstandingR2T", lo: 1, hi: 65535, session: true },
  ErrorRecoveryLevel: { kind: "min", field: "errorRecoveryLevel", lo: 0, hi: 2, session: true },
};

const BOOLEAN: Record<string, BooleanDef> = {
  InitialR2T: { kind: "or", field: "initialR2T", session: true },
  ImmediateData: { kind: "and", field: "immediateData", session: true },
  DataPDUInOrder: { kind: "or", field: "dataPDUInOrder", session: true },
  DataSequenceInOrder: { kind: "or", field: "dataSequenceInOrder", session: true },
  // Markers were removed by RFC 7143 but old initiators still offer them (RFC 7143 §13.25 / RFC 3720).
  IFMarker: { kind: "and", field: null, fixed: false, session: false },
  OFMarker: { kind: "and", field: null, fixed: false, session: false },
  RDMAExtensions: { kind: "and", field: null, fixed: false, session: true },
};

/** Declaratives the initiator sends: recorded by the login layer, not answered. */
const INITIATOR_DECLARATIVES = new Set(["InitiatorName", "InitiatorAlias", "TargetName", "SessionType"]);
/** Declaratives only a target may send: an initiator offering them gets "Irrelevant". */
const TARGET_DECLARATIVES = new Set(["TargetAlias", "TargetAddress", "TargetPortalGroupTag"]);
export const SECURITY_KEYS = /^(AuthMethod|CHAP_[AINRC])$/;

const NUMBER_RE = /^(0x[0-9a-fA-F]+|[0-9]+)$/;

function parseNumber(v: string): number | undefined {
  if (!NUMBER_RE.test(v)) return undefined;
  const n = Number(v);
  return Number.isSafeInteger(n) ? n : undefined;
}

export interface NegotiationContext {
  readonly offer: TargetOffer;
  /** Session-wide keys are only negotiated on the leading connection (RFC 7143 §13: LO keys). */
  readonly leadingConnection: boolean;
  readonly discovery: boolean;
  /** Keys already seen in this login or text exchange: a key offered twice fails the negotiation. */
  readonly seen: Set<string>;
}

/**
 * Negotiate the operational keys in one request. Fills `params`, returns the response pairs.
 * Security keys and the initiator's declaratives are the caller's; they are skipped here.
 */
export function negotiateOperationalKeys(
  pairs: readonly KeyValue[],
  ctx: NegotiationContext,
  params: NegotiatedParams,
): KeyValue[] {
  const out: KeyValue[] = [];
  for (const [key, value] of pairs) {
    if (ctx.seen.has(key)) {
      throw loginFailure(LoginStatus.initiatorError, `key ${key} offered more than once (RFC 7143 §6.1)`);
    }
    ctx.seen.add(key);
    if (SECURITY_KEYS.test(key) || INITIATOR_DECLARATIVES.has(key)) continue;
    if (TARGET_DECLARATIVES.has(key)) {
      out.push([key, "Irrelevant"]);
      continue;
    }
    const answer = negotiateKey(key, value, ctx, params);
    if (answer !== undefined) out.push([key, answer]);
  }
  // FirstBurstLength may never exceed MaxBurstLength (RFC 7143 §13.14).
  if (params.firstBurstLength > params.maxBurstLength) params.firstBurstLength = params.maxBurstLength;
  return out;
}

function negotiateKey(
  key: string,
  value: string,
  ctx: NegotiationContext,
  params: NegotiatedParams,
): string | undefined {
  const { offer } = ctx;
  if (key === "HeaderDigest" || key === "DataDigest") {
    const required = key === "HeaderDigest" ? offer.headerDigestRequired : offer.dataDigestRequired;
    const choices = value.split(",");
    const supported = required ? ["CRC32C"] : ["CRC32C", "None"];
    // The responder picks the first value of the originator's list it supports (RFC 7143 §6.2.1);
    // a plain "None" or "CRC32C" offer is honoured as offered.
    const pick = choices.find((c) => supported.includes(c));
    if (pick === undefined) {
      if (required)
        throw loginFailure(
          LoginStatus.initiatorError,
          `${key}=CRC32C is required by this target, offered ${value}`,
        );
      return "Reject";
    }
    if (key === "HeaderDigest") params.headerDigest = pick === "CRC32C";
    else params.dataDigest = pick === "CRC32C";
    return pick;
  }
  if (key === "MaxRecvDataSegmentLength") {
    const n = parseNumber(value);
    if (n === undefined || n < 512 || n > 0xffffff) return "Reject";
    params.initiatorMaxRecvDataSegmentLength = n;
    return undefined; // declarative: the target states its own value separately
  }
  if (key === "TaskReporting") {
    return value.split(",").includes("RFC3720") ? "RFC3720" : "Reject";
  }
  if (key === "iSCSIProtocolLevel") {
    const n = parseNumber(value);
    if (n === undefined || n > 31) return "Reject";
    return String(Math.min(n, 1)); // RFC 7144: 1 = RFC 7143
  }
  if (key === "OFMarkInt" || key === "IFMarkInt") return "Irrelevant"; // markers are off
  if (key === "SendTargets") return "Irrelevant"; // a Text-phase key, never negotiated in login
  const num = NUMERIC[key];
  if (num) {
    if (num.session && !ctx.leadingConnection) return "Irrelevant";
    const n = parseNumber(value);
    if (n === undefined || n < num.lo || n > num.hi) return "Reject";
    let mine = offer[num.field];
    if (num.field === "errorRecoveryLevel") mine = 0; // this target implements ErrorRecoveryLevel 0 only
    const result = num.kind === "min" ? Math.min(n, mine) : Math.max(n, mine);
    params[num.field] = result;
    return String(result);
  }
  const bool = BOOLEAN[key];
  if (bool) {
    if (bool.session && !ctx.leadingConnection) return "Irrelevant";
    if (value !== "Yes" && value !== "No") return "Reject";
    const theirs = value === "Yes";
    let mine: boolean;
    if (bool.field === null) mine = bool.fixed ?? false;
    else if (bool.field === "initialR2T") mine = offer.initialR2T;
    else if (bool.field === "immediateData") mine = offer.immediateData;
    else mine = true; // DataPDUInOrder / DataSequenceInOrder: this target wants in-order data
    const result = bool.kind === "and" ? theirs && mine : theirs || mine;
    if (bool.field !== null) params[bool.field] = result;
    return result ? "Yes" : "No";
  }
  return "NotUnderstood";
}

/** The keys the target declares in its last operational response. */
export function targetDeclarations(offer: TargetOffer): KeyValue[] {
  return [["MaxRecvDataSegmentLength", String(offer.maxRecvDataSegmentLength)]];
}
