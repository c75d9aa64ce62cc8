/**
 * The login phase of one connection (RFC 7143 §6.3, §11.12, §11.13): security and operational
 * stages with their transit rules, the C bit, identification of the target and the initiator's
 * right to reach it, CHAP, key negotiation, and finally the session binding — a new session with
 * a fresh TSIH (reinstating an older one with the same initiator and ISID), or a further
 * connection of an existing one.
 */
import type { Logger } from "../util/log.js";
import { ChapAuthenticator } from "./chap.js";
import type { ChapSecret, IscsiGlobalOptions } from "./options.js";
import {
  LoginStatus,
  LoginFailure,
  SECURITY_KEYS,
  defaultParams,
  encodeTextKeys,
  loginFailure,
  negotiateOperationalKeys,
  parseTextKeys,
  targetDeclarations,
  type KeyValue,
  type NegotiatedParams,
  type TargetOffer,
} from "./param.js";
import { Opcode, joinData, opcodeOf, snAdd, type LoginResponsePdu, type ParsedPdu } from "./pdu.js";
import type { Session } from "./session.js";
import type { TargetNode } from "./tgt_node.js";

export const enum Stage {
  Security = 0,
  Operational = 1,
  FullFeature = 3,
}

/** What login needs from the target as a whole. */
export interface LoginEnvironment {
  readonly globals: IscsiGlobalOptions;
  findNode(name: string): TargetNode | undefined;
  authSecrets(tag: number | undefined): readonly ChapSecret[];
  findSession(tsih: number): Session | undefined;
  findSessionByIsid(initiatorName: string, isid: string, targetName: string | undefined): Session | undefined;
  sessionCount(): number;
  createSession(init: NewSession): Session;
  endSession(session: Session, reason: string): void;
  /** Told of every refused login (for the counters). */
  loginRefused?(targetName: string, failure: LoginFailure): void;
}

export interface NewSession {
  initiatorName: string;
  isid: string;
  node: TargetNode | undefined;
  portalGroupTag: number;
  params: NegotiatedParams;
  queueDepth: number;
  initialCmdSN: number;
}

/** The outcome of one Login Request. */
export interface LoginStep {
  response: LoginResponsePdu;
  /** Set when the login failed: send the response, then close. */
  failed?: LoginFailure;
  /** Set when this response moves the connection to Full Feature Phase. */
  session?: Session;
  params?: NegotiatedParams;
}

const DISCOVERY_QUEUE_DEPTH = 8;
/** Bound on a login text assembled from C-bit PDUs (memory, not protocol, sets this limit). */
const MAX_LOGIN_TEXT = 64 * 1024;

export class LoginNegotiator {
  private stage: Stage = Stage.Security;
  private first = true;
  private isidBytes = Buffer.alloc(6);
  isid = "";
  private tsih = 0;
  private itt = 0;
  cid = 0;
  private cmdSN = 0;
  private initiatorName = "";
  private targetName: string | undefined;
  private discovery = false;
  private node: TargetNode | undefined;
  private joining: Session | undefined;
  private auth: ChapAuthenticator | undefined;
  private readonly seen = new Set<string>();
  private readonly params: NegotiatedParams;
  private offer!: TargetOffer;
  private declaredMrdsl = false;
  private sentTpgt = false;
  private continued: Buffer[] = [];

  constructor(
    private readonly env: LoginEnvironment,
    private readonly portalGroupTag: number,
    private readonly remoteAddress: string,
    private readonly log: Logger,
  ) {
    this.params = defaultParams(env.globals.maxRecvDataSegmentLength);
  }

  /** The InitiatorName the initiator gave ("" until its first Login Request). */
  get initiator(): string {
    return this.initiatorName;
  }

  /** The next Login Request should carry CHAP_N/CHAP_R (the throttle holds those back after failures). */
  get awaitingChapResponse(): boolean {
    return this.auth?.awaitingResponse ?? false;
  }

  /** Handle one PDU of the login phase. Never throws: failures become a failed LoginStep. */
  handle(pdu: ParsedPdu): LoginStep {
    try {
      return this.step(pdu);
    } catch (err) {
      const failure =
        err instanceof LoginFailure
          ? err
          : loginFailure(LoginStatus.targetError, `login: ${(err as Error).message}`);
      this.log.warn(
        { initiator: this.initiatorName || undefined, target: this.targetName, status: statusHex(failure) },
        `login refused: ${failure.message}`,
      );
      this.env.loginRefused?.(this.targetName ?? "", failure);
      return { response: this.response(0, [], failure), failed: failure };
    }
  }

  private step(pdu: ParsedPdu): LoginStep {
    if (pdu.opcode !== Opcode.LoginRequest) {
      throw loginFailure(LoginStatus.initiatorError, `opcode 0x${opcodeOf(pdu).toString(16)} during login`);
    }
    const transit = pdu.transit;
    const cont = pdu.continue;
    const csg = pdu.currentStage;
    const nsg = pdu.nextStage;
    if (this.first) {
      // RFC 7143 §11.12.4: Version-max / Version-min bracket the versions the initiator speaks; 0 is ours.
      if (pdu.versionMin > 0)
        throw loginFailure(LoginStatus.unsupportedVersion, `version-min ${pdu.versionMin} unsupported`);
      pdu.isid.copy(this.isidBytes);
      this.isid = this.isidBytes.toString("hex");
      this.tsih = pdu.tsih;
      this.itt = pdu.itt;
      this.cid = pdu.cid;
      this.cmdSN = pdu.cmdSN;
      // The security stage may be skipped altogether (RFC 7143 §6.3); auth policy is checked below.
      if (csg === Stage.Operational) this.stage = Stage.Operational;
    } else if (!pdu.isid.equals(this.isidBytes) || pdu.tsih !== this.tsih || pdu.cid !== this.cid) {
      throw loginFailure(LoginStatus.initiatorError, "ISID, TSIH or CID changed during login");
    }
    this.itt = pdu.itt;
    if (transit && cont) throw loginFailure(LoginStatus.initiatorError, "T and C bits both set");
    if (csg !== this.stage) {
      throw loginFailure(LoginStatus.initiatorError, `login request in stage ${csg}, expected ${this.stage}`);
    }
    if (transit && (nsg <= csg || nsg === 2)) {
      throw loginFailure(LoginStatus.initiatorError, `invalid transit from stage ${csg} to ${nsg}`);
    }
    // RFC 7143 §6.3.1: a text split over PDUs (C bit) is answered with empty responses until whole.
    if (cont) {
      this.continued.push(joinData(pdu.data));
      if (this.continued.reduce((n, b) => n + b.length, 0) > MAX_LOGIN_TEXT) {
        throw loginFailure(LoginStatus.initiatorError, `login text longer than ${MAX_LOGIN_TEXT} bytes`);
      }
      return { response: this.response(0, []) };
    }
    const text = this.continued.length ? Buffer.concat([...this.continued, ...pdu.data]) : joinData(pdu.data);
    this.continued = [];
    const pairs = parseTextKeys(text);
    if (this.first) {
      this.first = false;
      this.identify(pairs);
    }
    const out: KeyValue[] = [];
    if (!this.sentTpgt && !this.discovery) {
      out.push(["TargetPortalGroupTag", String(this.portalGroupTag)]);
      if (this.node?.config.alias) out.push(["TargetAlias", this.node.config.alias]);
      this.sentTpgt = true;
    }
    const security = new Map<string, string>();
    const other: KeyValue[] = [];
    for (const kv of pairs) {
      if (SECURITY_KEYS.test(kv[0])) {
        if (this.seen.has(kv[0]))
          throw loginFailure(LoginStatus.initiatorError, `key ${kv[0]} offered more than once`);
        this.seen.add(kv[0]);
        security.set(kv[0], kv[1]);
      } else other.push(kv);
    }
    const auth = this.auth!;
    let agreeTransit = false;
    if (this.stage === Stage.Security) {
      out.push(...auth.step(security));
      if (transit) {
        if (!auth.authenticated && auth.method === undefined && auth.mayBeSkipped) {
          auth.authenticated = true; // no AuthMethod offered: None (RFC 7143 §13 default)
        }
        if (!auth.authenticated && auth.method === undefined) {
          throw loginFailure(LoginStatus.authFailure, "authentication required, no AuthMethod offered");
        }
        agreeTransit = auth.authenticated;
      }
    } else {
      if (security.size > 0)
        throw loginFailure(LoginStatus.initiatorError, "security keys in the operational stage");
      if (!auth.authenticated) {
        if (!auth.mayBeSkipped) throw loginFailure(LoginStatus.authFailure, "authentication required");
        auth.authenticated = true;
      }
      agreeTransit = transit;
    }
    out.push(...negotiateOperationalKeys(other, this.ctx(), this.params));
    const nextStage = agreeTransit ? (nsg as Stage) : this.stage;
    // Our declaratives belong to the operational stage (RFC 7143 §6.3: operational negotiation
    // starts after security); only a direct security → full feature transit carries them earlier.
    if ((this.stage === Stage.Operational || nextStage === Stage.FullFeature) && !this.declaredMrdsl) {
      out.push(...targetDeclarations(this.offer));
      this.declaredMrdsl = true;
    }
    if (!agreeTransit) return { response: this.response(0, out) };
    if (nextStage !== Stage.FullFeature) {
      const response = this.response(nsg, out);
      this.stage = nextStage;
      return { response };
    }
    const session = this.bind();
    this.tsih = session.tsih;
    const response = this.response(nsg, out);
    this.stage = Stage.FullFeature;
    return { response, session, params: this.params };
  }

  /** The first request's declaratives: who the initiator is, which target, and may it come in. */
  private identify(pairs: readonly KeyValue[]): void {
    const get = (k: string) => pairs.find((p) => p[0] === k)?.[1];
    const name = get("InitiatorName");
    if (!name) throw loginFailure(LoginStatus.missingParameter, "InitiatorName missing");
    this.initiatorName = name;
    const type = get("SessionType") ?? "Normal";
    if (type !== "Normal" && type !== "Discovery") {
      throw loginFailure(LoginStatus.sessionTypeNotSupported, `SessionType ${type} unsupported`);
    }
    this.discovery = type === "Discovery";
    const g = this.env.globals;
    let policy = g.discoveryAuth;
    let group = g.discoveryAuthGroup;
    if (!this.discovery) {
      const targetName = get("TargetName");
      if (!targetName)
        throw loginFailure(LoginStatus.missingParameter, "TargetName missing in a Normal session");
      this.targetName = targetName;
      const node = this.env.findNode(targetName);
      if (!node) throw loginFailure(LoginStatus.notFound, `target ${targetName} not found`);
      const access = node.access(this.portalGroupTag, name, this.remoteAddress);
      if (access === "not-mapped") {
        throw loginFailure(
          LoginStatus.notFound,
          `target ${targetName} not reachable through portal group ${this.portalGroupTag}`,
        );
      }
      if (access === "forbidden") {
        throw loginFailure(
          LoginStatus.forbidden,
          `initiator ${name} from ${this.remoteAddress} not allowed on ${targetName}`,
        );
      }
      this.node = node;
      policy = node.config.auth;
      group = node.config.authGroup;
    }
    if (this.tsih !== 0) {
      const s = this.env.findSession(this.tsih);
      if (!s || s.ended || s.initiatorName !== name || s.isid !== this.isid || s.node !== this.node) {
        throw loginFailure(LoginStatus.sessionDoesNotExist, `no session with TSIH ${this.tsih} for ${name}`);
      }
      const limit = Math.min(s.params.maxConnections, g.maxConnectionsPerSession);
      if (!s.connections.has(this.cid) && s.connections.size >= limit) {
        throw loginFailure(
          LoginStatus.tooManyConnections,
          `session ${this.tsih} already has ${s.connections.size} connection(s)`,
        );
      }
      this.joining = s;
      // Session-wide values stay as the leading connection negotiated them.
      Object.assign(this.params, s.params, {
        headerDigest: false,
        dataDigest: false,
        initiatorMaxRecvDataSegmentLength: 8192,
      });
    }
    this.auth = new ChapAuthenticator(
      policy,
      this.env.authSecrets(group),
      `${name} -> ${this.targetName ?? "discovery"}`,
    );
    const digest = this.node?.config.digest;
    this.offer = {
      headerDigestRequired: digest?.headerRequired ?? false,
      dataDigestRequired: digest?.dataRequired ?? false,
      maxRecvDataSegmentLength: g.maxRecvDataSegmentLength,
      maxConnections: g.maxConnectionsPerSession,
      initialR2T: g.initialR2T,
      immediateData: g.immediateData,
      maxBurstLength: g.maxBurstLength,
      firstBurstLength: g.firstBurstLength,
      defaultTime2Wait: g.defaultTime2Wait,
      defaultTime2Retain: g.defaultTime2Retain,
      maxOutstandingR2T: g.maxOutstandingR2T,
      errorRecoveryLevel: g.errorRecoveryLevel,
    };
  }

  private ctx() {
    return {
      offer: this.offer,
      leadingConnection: this.tsih === 0,
      discovery: this.discovery,
      seen: this.seen,
    };
  }

  /** Enter Full Feature Phase: join the session or create (and maybe reinstate) one. */
  private bind(): Session {
    if (this.offer.headerDigestRequired && !this.params.headerDigest) {
      throw loginFailure(LoginStatus.initiatorError, "HeaderDigest=CRC32C is required by this target");
    }
    if (this.offer.dataDigestRequired && !this.params.dataDigest) {
      throw loginFailure(LoginStatus.initiatorError, "DataDigest=CRC32C is required by this target");
    }
    if (this.joining) {
      if (this.joining.ended)
        throw loginFailure(LoginStatus.sessionDoesNotExist, "session ended during login");
      return this.joining;
    }
    const g = this.env.globals;
    if (!g.allowDuplicateIsid) {
      const old = this.env.findSessionByIsid(this.initiatorName, this.isid, this.targetName);
      // RFC 7143 §6.3.5: a leading login with the ISID of a live session reinstates it.
      if (old) this.env.endSession(old, "session reinstatement");
    }
    if (this.env.sessionCount() >= g.maxSessions) {
      throw loginFailure(LoginStatus.outOfResources, `MaxSessions ${g.maxSessions} reached`);
    }
    return this.env.createSession({
      initiatorName: this.initiatorName,
      isid: this.isid,
      node: this.node,
      portalGroupTag: this.portalGroupTag,
      params: this.params,
      queueDepth: this.discovery ? DISCOVERY_QUEUE_DEPTH : (this.node?.config.queueDepth ?? 1),
      initialCmdSN: this.cmdSN,
    });
  }

  /** Build a Login Response (RFC 7143 §11.13); StatSN is filled in by the connection. */
  private response(nsg: number, pairs: readonly KeyValue[], failure?: LoginFailure): LoginResponsePdu {
    const s = this.joining;
    const exp = s ? s.expCmdSN : this.cmdSN;
    const transit = !failure && nsg !== 0 && nsg > this.stage;
    return {
      opcode: Opcode.LoginResponse,
      // A failing response carries neither T nor the stages (all flag bits 0).
      transit,
      currentStage: failure ? 0 : this.stage,
      nextStage: transit ? nsg : 0,
      versionMax: 0,
      versionActive: 0,
      isid: this.isidBytes,
      tsih: failure ? 0 : this.tsih,
      itt: this.itt,
      expCmdSN: exp,
      maxCmdSN: s ? s.maxCmdSN : snAdd(exp, (this.node?.config.queueDepth ?? DISCOVERY_QUEUE_DEPTH) - 1),
      statusClass: failure?.statusClass ?? 0,
      statusDetail: failure?.statusDetail ?? 0,
      data: [encodeTextKeys(pairs)],
    };
  }
}

function statusHex(f: LoginFailure): string {
  return `0x${((f.statusClass << 8) | f.statusDetail).toString(16).padStart(4, "0")}`;
}
