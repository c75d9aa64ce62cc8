/**
 * The [iSCSI] section: global target options (RFC 7143 §13 login keys and their limits, SPDK's
 * NodeBase, AuthFile, Timeout, NopInInterval, MaxSessions, MaxQueueDepth and the rest).
 */
import type { IscsiGlobalOptions } from "../../iscsi/options.js";
import type { IniSection } from "../ini.js";
import { type KeyRule, type Mutable, Reader, walk } from "../section_reader.js";
import { authGroupRef, authPolicy } from "./iscsi_values.js";

/** SPDK's default for MaxQueueDepth and a target's QueueDepth (lib/iscsi/iscsi.h DEFAULT_MAX_QUEUE_DEPTH). */
export const DEFAULT_MAX_QUEUE_DEPTH = 64;
/** Our ceiling for MaxQueueDepth: the CmdSN window is a 32-bit serial number space, but beyond this
 * the per-session task array is only memory spent. */
const QUEUE_DEPTH_LIMIT = 4096;

const ISCSI_IGNORED = ["MinConnectionsPerCore", "MaxConnectionsPerCore"];

export interface GlobalsOut {
  globals: Mutable<IscsiGlobalOptions>;
  maxQueueDepth: number;
  authFile?: { path: string; line: number };
  discoveryAuthLine?: number;
}

export function readIscsi(r: Reader, sec: IniSection, out: GlobalsOut): void {
  const g = out.globals;
  const burstMax = 16777215; // RFC 7143 §13.13-14: 512 to 2^24-1
  const intKey = (set: (n: number) => void, min: number, max: number): KeyRule => ({
    apply: (e) => set(r.int(e, min, max)),
  });
  walk(
    r,
    sec,
    {
      NodeBase: {
        apply: (e) => {
          const v = r.one(e, "an iSCSI name prefix such as iqn.2016-06.io.spdk");
          if (!/^(iqn\.[0-9]{4}-[0-9]{2}\.[a-z0-9][a-z0-9.\-:]*|eui\.|naa\.)/.test(v) || /\s/.test(v)) {
            throw r.error(
              e.line,
              `NodeBase expects an iqn. name prefix such as iqn.2016-06.io.spdk, got "${v}"`,
            );
          }
          g.nodeBase = v;
        },
      },
      AuthFile: {
        apply: (e) => {
          out.authFile = { path: r.one(e, "the path of the CHAP secrets file"), line: e.line };
        },
      },
      // SPDK: "Socket I/O timeout sec. (0 is infinite)": 0 = never drop an idle-but-unanswering connection.
      // The iSCSI layer reads Infinity as "never time out".
      Timeout: intKey((n) => (g.nopTimeoutSec = n === 0 ? Infinity : n), 0, 3600),
      NopInInterval: intKey((n) => (g.nopInIntervalSec = n), 1, 60),
      DiscoveryAuthMethod: {
        apply: (e) => {
          g.discoveryAuth = authPolicy(r, e);
          out.discoveryAuthLine = e.line;
        },
      },
      DiscoveryAuthGroup: { apply: (e) => (g.discoveryAuthGroup = authGroupRef(r, e)) },
      MaxSessions: intKey((n) => (g.maxSessions = n), 1, 65535),
      MaxConnectionsPerSession: intKey((n) => (g.maxConnectionsPerSession = n), 1, 65535),
      MaxQueueDepth: intKey((n) => (out.maxQueueDepth = n), 1, QUEUE_DEPTH_LIMIT),
      DefaultTime2Wait: intKey((n) => (g.defaultTime2Wait = n), 0, 3600),
      DefaultTime2Retain: intKey((n) => (g.defaultTime2Retain = n), 0, 3600),
      FirstBurstLength: intKey((n) => (g.firstBurstLength = n), 512, burstMax),
      MaxBurstLength: intKey((n) => (g.maxBurstLength = n), 512, burstMax),
      MaxRecvDataSegmentLength: intKey((n) => (g.maxRecvDataSegmentLength = n), 512, burstMax),
      MaxOutstandingR2T: intKey((n) => (g.maxOutstandingR2T = n), 1, 65535),
      ImmediateData: { apply: (e) => (g.immediateData = r.bool(e)) },
      InitialR2T: { apply: (e) => (g.initialR2T = r.bool(e)) },
      AllowDuplicateIsid: { apply: (e) => (g.allowDuplicateIsid = r.bool(e)) },
      ErrorRecoveryLevel: {
        apply: (e) => {
          const n = r.int(e, 0, 2);
          if (n !== 0)
            throw r.error(e.line, `ErrorRecoveryLevel ${n} is not supported; usertgt implements level 0`);
          g.errorRecoveryLevel = 0;
        },
      },
      LoginTimeout: intKey((n) => (g.loginTimeoutSec = n), 1, 3600),
      // usertgt's own defences against misbehaving peers (docs/config.md).
      PreLoginPoolSize: intKey((n) => (g.preLoginPoolSize = n), 1, 65535),
      PreLoginPerAddress: intKey((n) => (g.preLoginPerAddress = n), 1, 65535),
      FirstPduTimeoutMs: intKey((n) => (g.firstPduTimeoutMs = n), 100, 600_000),
      AuthFailureDelayMs: intKey((n) => (g.authFailureDelayMs = n), 0, 60_000),
      AuthFailureDelayMaxMs: intKey((n) => (g.authFailureDelayMaxMs = n), 0, 600_000),
      MaxWriteDataPerConnection: intKey((n) => (g.maxWriteDataPerConnection = n), 512, 2 ** 40),
      MaxWriteDataTotal: intKey((n) => (g.maxWriteDataTotal = n), 512, 2 ** 40),
      DataOutTimeout: intKey((n) => (g.dataOutTimeoutSec = n), 1, 3600),
    },
    ISCSI_IGNORED,
  );
  if (g.authFailureDelayMaxMs < g.authFailureDelayMs) {
    const line = sec.entries.find((e) => e.key === "AuthFailureDelayMaxMs")?.line ?? sec.line;
    throw r.error(
      line,
      `AuthFailureDelayMaxMs ${g.authFailureDelayMaxMs} is below AuthFailureDelayMs ${g.authFailureDelayMs}`,
    );
  }
  if (g.maxWriteDataTotal < g.maxWriteDataPerConnection) {
    const line = sec.entries.find((e) => e.key === "MaxWriteDataTotal")?.line ?? sec.line;
    throw r.error(
      line,
      `MaxWriteDataTotal ${g.maxWriteDataTotal} is below MaxWriteDataPerConnection ${g.maxWriteDataPerConnection}`,
    );
  }
  if (g.firstBurstLength > g.maxBurstLength) {
    const line = sec.entries.find((e) => e.key === "FirstBurstLength")?.line ?? sec.line;
    throw r.error(
      line,
      `FirstBurstLength ${g.firstBurstLength} exceeds MaxBurstLength ${g.maxBurstLength} (RFC 7143 §13.14)`,
    );
  }
}
