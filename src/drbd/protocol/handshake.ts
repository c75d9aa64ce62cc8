/**
 * The connection handshake before any state is exchanged: P_CONNECTION_FEATURES (drbd_do_features)
 * and CRAM-HMAC peer authentication, P_AUTH_CHALLENGE / P_AUTH_RESPONSE (drbd_do_auth).
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { DrbdProtocolError } from "./commands.js";
import { exactly } from "./codec.js";

// P_CONNECTION_FEATURES (drbd_receiver.c drbd_do_features)

/** Feature flags (DRBD_FF_*). This implementation offers none yet: no TRIM, THIN_RESYNC, WSAME, WZEROES. */
export const FF_TRIM = 1;
export const FF_THIN_RESYNC = 2;
export const FF_WSAME = 4;
export const FF_WZEROES = 8;

export interface ConnectionFeatures {
  protocolMin: number;
  protocolMax: number;
  featureFlags: number;
}

export function encodeConnectionFeatures(f: ConnectionFeatures): Buffer {
  const b = Buffer.alloc(72);
  b.writeUInt32BE(f.protocolMin, 0);
  b.writeUInt32BE(f.featureFlags >>> 0, 4);
  b.writeUInt32BE(f.protocolMax, 8);
  return b;
}

export function decodeConnectionFeatures(b: Buffer): ConnectionFeatures {
  exactly(b, 72, "P_CONNECTION_FEATURES");
  const protocolMin = b.readUInt32BE(0);
  const max = b.readUInt32BE(8);
  // Peers before 8.3.x sent only protocol_min; 0 means "same as min".
  return { protocolMin, featureFlags: b.readUInt32BE(4), protocolMax: max === 0 ? protocolMin : max };
}

/** The agreed version and features, or a message naming the incompatible ranges. */
export function negotiateFeatures(
  mine: ConnectionFeatures,
  peer: ConnectionFeatures,
): { agreedVersion: number; agreedFeatures: number } | string {
  if (mine.protocolMax < peer.protocolMin || peer.protocolMax < mine.protocolMin)
    return `incompatible DRBD dialects: I support ${mine.protocolMin}-${mine.protocolMax}, peer supports ${peer.protocolMin}-${peer.protocolMax}`;
  return {
    agreedVersion: Math.min(mine.protocolMax, peer.protocolMax),
    agreedFeatures: mine.featureFlags & peer.featureFlags,
  };
}

// CRAM-HMAC (drbd_receiver.c drbd_do_auth): both sides challenge, both answer with HMAC(secret, challenge).

export const CHALLENGE_LEN = 64;

export function makeChallenge(): Buffer {
  return randomBytes(CHALLENGE_LEN);
}

/** Maps the kernel crypto name in `cram-hmac-alg` (sha1, sha256, md5 …) to node:crypto's HMAC. */
export function authResponse(alg: string, sharedSecret: string, peerChallenge: Buffer): Buffer {
  const name = alg.replace(/^hmac\((.*)\)$/, "$1");
  try {
    return createHmac(name, Buffer.from(sharedSecret, "utf8")).update(peerChallenge).digest();
  } catch (e) {
    throw new DrbdProtocolError(`cram-hmac-alg ${alg} is not available: ${(e as Error).message}`);
  }
}

/** Validates the peer's P_AUTH_CHALLENGE payload as the kernel does; returns an error message or undefined. */
export function checkPeerChallenge(peerChallenge: Buffer, myChallenge: Buffer): string | undefined {
  if (peerChallenge.length > CHALLENGE_LEN * 2) return "AuthChallenge payload too big";
  if (peerChallenge.length < CHALLENGE_LEN) return "AuthChallenge payload too small";
  // The kernel compares the first CHALLENGE_LEN bytes only (a reflected challenge, perhaps padded).
  if (peerChallenge.subarray(0, CHALLENGE_LEN).equals(myChallenge.subarray(0, CHALLENGE_LEN)))
    return "peer presented the same challenge";
  return undefined;
}

/** True when the peer's P_AUTH_RESPONSE is the HMAC of my challenge. */
export function verifyAuthResponse(
  alg: string,
  sharedSecret: string,
  myChallenge: Buffer,
  response: Buffer,
): boolean {
  const right = authResponse(alg, sharedSecret, myChallenge);
  return response.length === right.length && timingSafeEqual(response, right);
}
