/**
 * Mode page state of one logical unit (SPC-4 7.5, SBC-3 6.4): the pages this target reports, with
 * their current, changeable and default values. Saved values are not supported.
 */
import type { BlockDeviceInfo } from "../bdev/bdev.js";

/** Mode page codes (SPC-4 Table 457 / SBC-3 Table 158). */
export const enum ModePage {
  ReadWriteErrorRecovery = 0x01,
  Caching = 0x08,
  Control = 0x0a,
  InformationalExceptions = 0x1c,
  AllPages = 0x3f,
}

/** Page control field of MODE SENSE (SPC-4 6.11.1). */
export const enum PageControl {
  Current = 0,
  Changeable = 1,
  Default = 2,
  Saved = 3,
}

interface PageDef {
  readonly code: number;
  /** Whole page length in bytes, header included. */
  readonly length: number;
  /** Default value (built once per LU). */
  readonly defaults: Buffer;
  /** Bits MODE SELECT may change. */
  readonly changeable: Buffer;
}

function page(code: number, length: number, init?: (b: Buffer) => void): Buffer {
  const b = Buffer.alloc(length);
  b[0] = code;
  b[1] = length - 2;
  init?.(b);
  return b;
}

/** The mode pages reported, in ascending page code order (SPC-4 6.11: "all pages" order). */
export class ModePages {
  private readonly defs: PageDef[];
  private readonly current = new Map<number, Buffer>();

  constructor(bdev: BlockDeviceInfo) {
    this.defs = [
      {
        // SBC-3 6.4.6: no error-recovery knobs; all zeroes, none changeable.
        code: ModePage.ReadWriteErrorRecovery,
        length: 12,
        defaults: page(0x01, 12),
        changeable: page(0x01, 12, (b) => b.fill(0, 2)),
      },
      {
        // SBC-3 6.4.5: WCE reports the device's volatile cache; changeable only when it has one.
        code: ModePage.Caching,
        length: 20,
        defaults: page(0x08, 20, (b) => {
          if (bdev.volatileWriteCache) b[2] |= 0x04;
        }),
        changeable: page(0x08, 20, (b) => {
          b.fill(0, 2);
          if (bdev.volatileWriteCache) b[2] = 0x04;
        }),
      },
      {
        // SPC-4 7.5.8: TST=000 (one task set), QUEUE ALGORITHM MODIFIER=1 (unrestricted),
        // QERR=00, TAS=0. D_SENSE and SWP are changeable.
        code: ModePage.Control,
        length: 12,
        defaults: page(0x0a, 12, (b) => {
          b[3] = 0x10;
          b.writeUInt16BE(0xffff, 8); // BUSY TIMEOUT PERIOD: unlimited
        }),
        changeable: page(0x0a, 12, (b) => {
          b.fill(0, 2);
          b[2] = 0x04; // D_SENSE
          b[4] = 0x08; // SWP
        }),
      },
      {
        // SPC-4 7.5.11: no informational exception reporting (MRIE=0, DEXCPT=0).
        code: ModePage.InformationalExceptions,
        length: 12,
        defaults: page(0x1c, 12),
        changeable: page(0x1c, 12, (b) => b.fill(0, 2)),
      },
    ];
    this.resetToDefaults();
  }

  /** Page codes reported, ascending. */
  codes(): number[] {
    return this.defs.map((d) => d.code);
  }

  has(code: number): boolean {
    return this.defs.some((d) => d.code === code);
  }

  /** A copy of one page as MODE SENSE returns it for page control `pc` (not Saved). */
  get(code: number, pc: PageControl): Buffer | undefined {
    const def = this.defs.find((d) => d.code === code);
    if (!def) return undefined;
    switch (pc) {
      case PageControl.Changeable:
        return Buffer.from(def.changeable);
      case PageControl.Default:
        return Buffer.from(def.defaults);
      default:
        return Buffer.from(this.current.get(code) ?? def.defaults);
    }
  }

  /**
   * Check a MODE SELECT page against the changeable mask (SPC-4 6.9: a bit that is not changeable
   * must equal its current value). Returns the byte offset within the page of the first bad field,
   * or -1 when the page is acceptable.
   */
  validate(code: number, data: Buffer): number {
    const def = this.defs.find((d) => d.code === code);
    if (!def) return 0;
    if (data.length !== def.length || data[1] !== def.length - 2) return 1;
    const cur = this.current.get(code) ?? def.defaults;
    for (let i = 2; i < def.length; i++) {
      if ((data[i] & ~def.changeable[i]) !== (cur[i] & ~def.changeable[i])) return i;
    }
    return -1;
  }

  /** Store a validated page's changeable bits. Returns true when something changed. */
  apply(code: number, data: Buffer): boolean {
    const def = this.defs.find((d) => d.code === code);
    if (!def) return false;
    const cur = this.current.get(code) ?? Buffer.from(def.defaults);
    let changed = false;
    for (let i = 2; i < def.length; i++) {
      const v = (cur[i] & ~def.changeable[i]) | (data[i] & def.changeable[i]);
      if (v !== cur[i]) changed = true;
      cur[i] = v;
    }
    this.current.set(code, cur);
    return changed;
  }

  resetToDefaults(): void {
    for (const d of this.defs) this.current.set(d.code, Buffer.from(d.defaults));
  }

  /** Control page D_SENSE: descriptor format sense data. */
  get descriptorSense(): boolean {
    return ((this.current.get(ModePage.Control)?.[2] ?? 0) & 0x04) !== 0;
  }

  /** Control page SWP: the medium is software write protected (SPC-4 7.5.8). */
  get softwareWriteProtect(): boolean {
    return ((this.current.get(ModePage.Control)?.[4] ?? 0) & 0x08) !== 0;
  }

  /** Caching page WCE. */
  get writeCacheEnabled(): boolean {
    return ((this.current.get(ModePage.Caching)?.[2] ?? 0) & 0x04) !== 0;
  }
}
