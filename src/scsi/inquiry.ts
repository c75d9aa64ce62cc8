/**
 * INQUIRY (SPC-4 6.6): standard data and the vital product data pages 00h, 80h, 83h, 86h (SPC-4
 * 7.8), B0h, B1h, B2h (SBC-3 6.6).
 */
import { respond, type CommandContext, type LogicalUnitView } from "./command.js";
import { invalidCdbField } from "./sense.js";
import type { ITNexus } from "./task.js";

export const PRODUCT_REVISION = "0001";

/** Limits advertised in the Block Limits VPD page, and enforced by sbc.ts. */
export interface BlockLimits {
  /** MAXIMUM TRANSFER LENGTH in blocks, for READ/WRITE/VERIFY/COMPARE AND WRITE… */
  readonly maxTransferBlocks: number;
  readonly optimalTransferBlocks: number;
  readonly maxCompareAndWriteBlocks: number;
  readonly maxUnmapBlocks: number;
  readonly maxUnmapDescriptors: number;
  readonly maxWriteSameBlocks: number;
}

const MAX_TRANSFER_BYTES = 32 * 1024 * 1024;

/** MAXIMUM TRANSFER LENGTH in blocks (every READ and WRITE checks it: no BlockLimits object for it). */
export function maxTransferBlocks(lu: LogicalUnitView): number {
  return MAX_TRANSFER_BYTES / lu.bdev.blockSize;
}

export function blockLimits(lu: LogicalUnitView): BlockLimits {
  const bs = lu.bdev.blockSize;
  // The device server takes MAX_TRANSFER_BYTES whatever the disk below (the kernel splits requests
  // to the disk's queue limits), so MAXIMUM TRANSFER LENGTH is ours; OPTIMAL TRANSFER LENGTH is what
  // the disk takes best: its optimal I/O size, else the largest request its queue takes whole.
  const optimalBytes = Math.min(
    MAX_TRANSFER_BYTES,
    lu.bdev.optimalTransferBytes ?? lu.bdev.maxRequestBytes ?? 1024 * 1024,
  );
  return {
    maxTransferBlocks: MAX_TRANSFER_BYTES / bs,
    optimalTransferBlocks: Math.max(1, Math.floor(optimalBytes / bs)),
    maxCompareAndWriteBlocks: 255,
    maxUnmapBlocks: lu.bdev.supportsUnmap ? 0x100000 : 0,
    maxUnmapDescriptors: lu.bdev.supportsUnmap ? 256 : 0,
    maxWriteSameBlocks: MAX_TRANSFER_BYTES / bs,
  };
}

/** Space-padded ASCII field (SPC-4 4.4.1). */
function ascii(text: string, width: number): Buffer {
  const clean = text.replace(/[^\x20-\x7e]/g, " ").slice(0, width);
  return Buffer.from(clean.padEnd(width, " "), "ascii");
}

function standardInquiry(lu: LogicalUnitView): Buffer {
  const d = Buffer.alloc(96);
  d[0] = 0x00; // peripheral qualifier 000b, direct access block device
  d[1] = 0x00; // RMB 0: a virtual disk's medium is not removable, as SPDK, LIO and tgt report
  d[2] = 0x06; // VERSION: SPC-4
  d[3] = 0x10 | 0x02; // HISUP, RESPONSE DATA FORMAT 2
  d[4] = d.length - 5;
  d[7] = 0x02; // CMDQUE
  ascii(lu.vendor, 8).copy(d, 8);
  ascii(lu.bdev.productName, 16).copy(d, 16);
  ascii(PRODUCT_REVISION, 4).copy(d, 32);
  // Version descriptors (SPC-4 Table 148): SAM-5, iSCSI, SPC-4, SBC-3.
  [0x00a0, 0x0960, 0x0460, 0x04c0].forEach((v, i) => d.writeUInt16BE(v, 58 + 2 * i));
  return d;
}

/** VPD pages supported, ascending (SPC-4 7.8.15 requires the list itself first). */
const VPD_PAGES = [0x00, 0x80, 0x83, 0x86, 0xb0, 0xb1, 0xb2];

function vpd(code: number, body: Buffer): Buffer {
  const h = Buffer.alloc(4);
  h[1] = code;
  h.writeUInt16BE(body.length, 2);
  return Buffer.concat([h, body]);
}

function hexOfUuid(uuid: string): string {
  return uuid.replace(/-/g, "").toLowerCase().padEnd(32, "0").slice(0, 32);
}

/** One designation descriptor (SPC-4 7.8.6.1). */
function designator(codeSet: number, piv: boolean, association: number, type: number, id: Buffer): Buffer {
  const h = Buffer.alloc(4);
  h[0] = (piv ? 0x50 : 0x00) | codeSet; // PROTOCOL IDENTIFIER 5 (iSCSI) when PIV
  h[1] = (piv ? 0x80 : 0) | (association << 4) | type;
  h[3] = id.length;
  return Buffer.concat([h, id]);
}

/** SCSI name string: UTF-8, null terminated, padded to a multiple of 4 (SPC-4 7.8.6.11). */
function scsiNameString(name: string): Buffer {
  const raw = Buffer.from(name, "utf8");
  const b = Buffer.alloc((raw.length + 4) & ~3);
  raw.copy(b);
  return b;
}

function deviceIdentification(lu: LogicalUnitView, nexus: ITNexus): Buffer {
  const hex = hexOfUuid(lu.bdev.uuid);
  // NAA 6 (IEEE Registered Extended): the NAA nibble, then 124 bits taken from the LU's UUID.
  const naa = Buffer.from(`6${hex.slice(0, 31)}`, "hex");
  const t10 = Buffer.concat([ascii(lu.vendor, 8), Buffer.from(hex, "ascii")]);
  const relPort = Buffer.alloc(4);
  relPort.writeUInt16BE(nexus.portalGroupTag & 0xffff, 2);
  return vpd(
    0x83,
    Buffer.concat([
      designator(1, false, 0, 3, naa), // logical unit, NAA
      designator(2, false, 0, 1, t10), // logical unit, T10 vendor ID
      designator(1, true, 1, 4, relPort), // target port, relative target port
      designator(3, true, 1, 8, scsiNameString(nexus.targetPort)), // target port name
      designator(3, true, 2, 8, scsiNameString(nexus.targetName)), // target device name
    ]),
  );
}

function extendedInquiry(lu: LogicalUnitView): Buffer {
  const b = Buffer.alloc(60);
  b[1] = 0x07; // HEADSUP, ORDSUP, SIMPSUP: all task attributes (task_set.ts)
  b[2] = lu.bdev.volatileWriteCache ? 0x01 : 0x00; // V_SUP
  return vpd(0x86, b);
}

function blockLimitsPage(lu: LogicalUnitView): Buffer {
  const l = blockLimits(lu);
  const b = Buffer.alloc(60);
  b[1] = l.maxCompareAndWriteBlocks;
  // OPTIMAL TRANSFER LENGTH GRANULARITY: the physical block, so initiators align to it.
  b.writeUInt16BE(Math.max(1, (lu.bdev.physicalBlockSize ?? lu.bdev.blockSize) / lu.bdev.blockSize), 2);
  b.writeUInt32BE(l.maxTransferBlocks, 4);
  b.writeUInt32BE(l.optimalTransferBlocks, 8);
  b.writeUInt32BE(l.maxTransferBlocks, 12); // MAXIMUM PREFETCH LENGTH
  b.writeUInt32BE(l.maxUnmapBlocks, 16);
  b.writeUInt32BE(l.maxUnmapDescriptors, 20);
  b.writeUInt32BE(lu.bdev.supportsUnmap ? 1 : 0, 24); // OPTIMAL UNMAP GRANULARITY
  b.writeBigUInt64BE(BigInt(l.maxWriteSameBlocks), 32);
  return vpd(0xb0, b);
}

function blockDeviceCharacteristics(lu: LogicalUnitView): Buffer {
  const b = Buffer.alloc(60);
  // MEDIUM ROTATION RATE (SBC-4 Table 237): 0001h non-rotating; 0000h rate not reported, for a disk
  // the kernel calls rotational (it does not tell the rate).
  b.writeUInt16BE(lu.bdev.rotational === true ? 0x0000 : 0x0001, 0);
  return vpd(0xb1, b);
}

function logicalBlockProvisioning(lu: LogicalUnitView): Buffer {
  const b = Buffer.alloc(4);
  if (lu.bdev.supportsUnmap) {
    b[1] = 0x80 | 0x40 | 0x20; // LBPU, LBPWS, LBPWS10
    b[2] = 0x02; // PROVISIONING TYPE: thin
  }
  if (lu.bdev.unmapReadsZeroes) b[1] |= 0x04; // LBPRZ
  return vpd(0xb2, b);
}

export function inquiry(ctx: CommandContext): void {
  const { task, lu } = ctx;
  const cdb = task.cdb;
  const evpd = (cdb[1] & 0x01) !== 0;
  if (cdb[1] & 0x02) throw invalidCdbField(1, 1); // CMDDT is obsolete (SPC-4 6.6.1)
  if (cdb[1] & 0xfc) throw invalidCdbField(1);
  const alloc = cdb.readUInt16BE(3);
  const code = cdb[2];
  if (!evpd) {
    if (code !== 0) throw invalidCdbField(2);
    respond(task, standardInquiry(lu), alloc);
    return;
  }
  let page: Buffer;
  switch (code) {
    case 0x00:
      page = vpd(0x00, Buffer.from(VPD_PAGES));
      break;
    case 0x80:
      page = vpd(0x80, Buffer.from(hexOfUuid(lu.bdev.uuid), "ascii"));
      break;
    case 0x83:
      page = deviceIdentification(lu, task.nexus);
      break;
    case 0x86:
      page = extendedInquiry(lu);
      break;
    case 0xb0:
      page = blockLimitsPage(lu);
      break;
    case 0xb1:
      page = blockDeviceCharacteristics(lu);
      break;
    case 0xb2:
      page = logicalBlockProvisioning(lu);
      break;
    default:
      throw invalidCdbField(2);
  }
  respond(task, page, alloc);
}

/** INQUIRY data for a LUN that does not exist (SPC-4 6.6.2: qualifier 011b, type 1Fh). */
export function inquiryNoLun(): Buffer {
  const d = Buffer.alloc(36);
  d[0] = 0x7f;
  d[2] = 0x06;
  d[3] = 0x12;
  d[4] = 31;
  return d;
}
