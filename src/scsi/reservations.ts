/**
 * Reservations of one logical unit: SPC-4 5.13 persistent reservations (PERSISTENT RESERVE IN/OUT)
 * and SPC-2 reservations (RESERVE/RELEASE 6/10), with the command conflict table of SPC-4 5.13.1.
 * The LU (scsi/device.ts) dispatches opcodes 0x5E/0x5F/0x16/0x17/0x56/0x57 here and asks conflicts()
 * before executing any other command.
 */
import type { ITNexus, ScsiTask } from "./task.js";
import { ASC, SenseError, SenseKey, type AscAscq } from "./sense.js";

/** What the LU does for the reservation logic: unit attentions and task aborts on other nexuses. */
export interface ReservationHooks {
  /** Establish a unit attention with `asc` for each I_T nexus key (ITNexus.key). */
  unitAttention(nexusKeys: readonly string[], asc: AscAscq): void;
  /** Abort the tasks of these I_T nexuses (PREEMPT AND ABORT, SPC-4 5.13.11.2.5). */
  abortTasksOf(nexusKeys: readonly string[]): void;
}

export interface ReservationsOptions {
  readonly lunName: string;
  /** Where APTPL state lives; without it APTPL=1 is refused. */
  readonly aptplFile?: string;
  readonly hooks: ReservationHooks;
}

/** Thrown when the caller must answer RESERVATION CONFLICT status (no sense data). */
export class ReservationConflict extends Error {
  constructor(message = "reservation conflict") {
    super(message);
    this.name = "ReservationConflict";
  }
}

export class Reservations {
  constructor(readonly options: ReservationsOptions) {}

  async load(): Promise<void> {}

  conflicts(_nexus: ITNexus, _cdb: Buffer): boolean {
    return false;
  }

  async persistentReserveIn(_task: ScsiTask): Promise<void> {
    throw new SenseError(SenseKey.IllegalRequest, ASC.INVALID_COMMAND_OPERATION_CODE);
  }

  async persistentReserveOut(_task: ScsiTask): Promise<void> {
    throw new SenseError(SenseKey.IllegalRequest, ASC.INVALID_COMMAND_OPERATION_CODE);
  }

  reserve(_task: ScsiTask): void {}

  release(_task: ScsiTask): void {}

  nexusLost(_nexus: ITNexus): void {}

  logicalUnitReset(): void {}
}
