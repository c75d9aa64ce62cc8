/**
 * The persistent reservation model (SPC-4 5.13): a registration is a reservation key for one initiator
 * port (iSCSI name + ISID, or the name alone) on one target port or all of them, and a reservation is
 * held by a registration or, for the all-registrants types, by every registrant.
 */
import type { ITNexus } from "./task.js";
import type { IscsiInitiatorPortId, PrType } from "./scsi_pr.js";

/** One registration: a reservation key for an initiator port on one (or every) target port. */
export interface Registration {
  key: bigint;
  readonly port: IscsiInitiatorPortId;
  /** Lower-cased target port ("<target>,t,0x<tpgt>"), or undefined for ALL_TG_PT. */
  readonly targetPort: string | undefined;
  readonly relativeTargetPortId: number;
  readonly transportId: Buffer;
  /** The nexus that registered, so its unit attentions reach it even before it sends again. */
  readonly originNexusKey: string | undefined;
}

export interface PersistentReservation {
  /** The holder for WE/EA/RO types; undefined for all-registrants types (every registrant holds). */
  readonly holder: Registration | undefined;
  readonly type: PrType;
}

export function portMatches(port: IscsiInitiatorPortId, nexus: ITNexus): boolean {
  return (
    port.name === nexus.initiatorName.toLowerCase() &&
    (port.isid === undefined || port.isid === nexus.isid.toLowerCase())
  );
}

/**
 * Whether `reg` already applies to initiator port `port` on `targetPort` (undefined: every target
 * port): a name-only registration covers every ISID, an ALL_TG_PT one every target port.
 */
export function covers(
  reg: Registration,
  port: IscsiInitiatorPortId,
  targetPort: string | undefined,
): boolean {
  return (
    reg.port.name === port.name &&
    (reg.port.isid === undefined || reg.port.isid === port.isid) &&
    (reg.targetPort === undefined || reg.targetPort === targetPort)
  );
}

export function samePort(a: IscsiInitiatorPortId, b: IscsiInitiatorPortId): boolean {
  return a.name === b.name && a.isid === b.isid;
}
