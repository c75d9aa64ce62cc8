/**
 * The APTPL state file of one LU (SPC-4 5.13.5, Activate Persist Through Power Loss): registrations and
 * the reservation as a small JSON file, validated on load with errors naming the file, and replaced
 * atomically (temp file, fsync, rename, fsync of the directory).
 */
import { open, rename, unlink } from "node:fs/promises";
import { dirname, basename, join } from "node:path";
import type { PersistentReservation, Registration } from "./pr_registration.js";
import {
  encodeIscsiTransportId,
  isAllRegistrants,
  isValidPrType,
  type IscsiInitiatorPortId,
} from "./scsi_pr.js";

/** The APTPL file's content (version 1). Keys are 16 hex digits. */
export interface PersistedState {
  readonly version: 1;
  readonly lun: string;
  readonly generation: number;
  readonly registrations: {
    key: string;
    initiatorName: string;
    isid?: string;
    targetPort?: string;
    relativeTargetPortId: number;
  }[];
  /** Index into registrations of the holder, -1 for all-registrants types. */
  readonly reservation: { type: number; holder: number } | null;
}

/** The reservation state an APTPL file restores. */
export interface AptplState {
  readonly registrations: Registration[];
  readonly reservation: PersistentReservation | undefined;
  readonly generation: number;
}

/** Parses and validates an APTPL file's text; `fail` throws an error naming the file and what is wrong. */
export function decodeAptplState(text: string, fail: (what: string) => never): AptplState {
  let state: PersistedState;
  try {
    state = JSON.parse(text) as PersistedState;
  } catch (err) {
    return fail(`not JSON (${(err as Error).message})`);
  }
  if (typeof state !== "object" || state === null || state.version !== 1) fail("unknown version");
  if (!Number.isInteger(state.generation) || state.generation < 0) fail("bad generation");
  if (!Array.isArray(state.registrations)) fail("registrations is not a list");
  const regs: Registration[] = state.registrations.map((r, i) => {
    if (typeof r !== "object" || r === null) fail(`registration ${i} is not an object`);
    if (typeof r.key !== "string" || !/^[0-9a-f]{16}$/.test(r.key)) fail(`registration ${i}: bad key`);
    if (typeof r.initiatorName !== "string" || r.initiatorName === "")
      fail(`registration ${i}: bad initiatorName`);
    if (r.isid !== undefined && (typeof r.isid !== "string" || !/^[0-9a-f]{12}$/.test(r.isid)))
      fail(`registration ${i}: bad isid`);
    if (r.targetPort !== undefined && typeof r.targetPort !== "string")
      fail(`registration ${i}: bad targetPort`);
    if (!Number.isInteger(r.relativeTargetPortId)) fail(`registration ${i}: bad relativeTargetPortId`);
    const port: IscsiInitiatorPortId =
      r.isid !== undefined ? { name: r.initiatorName, isid: r.isid } : { name: r.initiatorName };
    return {
      key: BigInt(`0x${r.key}`),
      port,
      targetPort: r.targetPort,
      relativeTargetPortId: r.relativeTargetPortId,
      transportId: encodeIscsiTransportId(port),
      originNexusKey: undefined,
    };
  });
  let reservation: PersistentReservation | undefined;
  if (state.reservation !== null && state.reservation !== undefined) {
    const { type, holder } = state.reservation;
    if (!isValidPrType(type)) return fail("bad reservation type");
    if (isAllRegistrants(type)) {
      if (regs.length === 0) fail("all-registrants reservation without registrants");
      reservation = { holder: undefined, type };
    } else {
      if (!Number.isInteger(holder) || holder < 0 || holder >= regs.length) fail("bad reservation holder");
      reservation = { holder: regs[holder], type };
    }
  }
  return { registrations: regs, reservation, generation: state.generation >>> 0 };
}

/** The APTPL file's content for this state. */
export function encodeAptplState(
  lunName: string,
  generation: number,
  registrations: readonly Registration[],
  reservation: PersistentReservation | undefined,
): PersistedState {
  const res = reservation;
  return {
    version: 1,
    lun: lunName,
    generation,
    registrations: registrations.map((r) => ({
      key: r.key.toString(16).padStart(16, "0"),
      initiatorName: r.port.name,
      ...(r.port.isid !== undefined ? { isid: r.port.isid } : {}),
      ...(r.targetPort !== undefined ? { targetPort: r.targetPort } : {}),
      relativeTargetPortId: r.relativeTargetPortId,
    })),
    reservation: res
      ? { type: res.type, holder: res.holder === undefined ? -1 : registrations.indexOf(res.holder) }
      : null,
  };
}

export async function removeIfPresent(file: string): Promise<void> {
  try {
    await unlink(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
}

/** Write `text` to `file` so that a crash leaves either the old or the new content. */
export async function writeFileAtomically(file: string, text: string): Promise<void> {
  const tmp = join(dirname(file), `.${basename(file)}.${process.pid}.tmp`);
  const fh = await open(tmp, "w", 0o600);
  try {
    await fh.writeFile(text, "utf8");
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, file);
  // Make the rename itself durable.
  const dir = await open(dirname(file), "r");
  try {
    await dir.sync();
  } catch {
    // Some file systems refuse fsync on a directory; the rename is still atomic.
  } finally {
    await dir.close();
  }
}
