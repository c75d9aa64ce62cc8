/**
 * How much a SyncTarget (or VerifyS) asks for per 100 ms turn (drbd_worker.c drbd_rs_number_requests,
 * drbd_rs_controller, drbd_rs_should_slow_down), in 512-byte sectors.
 *
 * - `c-plan-ahead 0`: a fixed rate, `resync-rate` KiB/s.
 * - otherwise the dynamic controller: it keeps `want` sectors in flight — `c-fill-target` sectors, or (when
 *   that is 0) what arrives in `c-delay-target` tenths of a second — and spreads each correction over
 *   `c-plan-ahead` turns through a plan FIFO, never above `c-max-rate`. A fresh resync starts from twice
 *   `resync-rate`, so `resync-rate` is only the initial guess (drbd.conf(5)).
 * - `c-min-rate`: while application I/O hits the device, the resync backs off once it runs faster than
 *   c-min-rate KiB/s (0: never back off), so applications keep their bandwidth.
 *
 * With the 8.4 defaults (c-fill-target 100 sectors) on a fast link every reply is in before the next turn,
 * so nothing is in flight when the controller looks: each turn asks for what came in plus one plan entry
 * (about c-fill-target / c-plan-ahead sectors), and the rate climbs by about one 4 KiB block per turn —
 * 400 KiB/s per second, c-max-rate's 100 MiB/s after some four minutes. A full resync of 256 MiB takes
 * about 36 s. That is the kernel's behaviour, not a fault of this port; a larger c-fill-target (or
 * c-plan-ahead 0 and a resync-rate) is what a fast link wants, as LINBIT's tuning advice says.
 */

/** SLEEP_TIME: one controller turn. */
export const RESYNC_TURN_MS = 100;

export interface ResyncControllerOptions {
  /** disk { resync-rate }, KiB/s. */
  resyncRateKiB: number;
  /** disk { c-plan-ahead }, 0.1 s; 0 selects the fixed rate. */
  cPlanAhead: number;
  /** disk { c-fill-target }, sectors. */
  cFillTarget: number;
  /** disk { c-delay-target }, 0.1 s. */
  cDelayTarget: number;
  /** disk { c-max-rate }, KiB/s. */
  cMaxRateKiB: number;
  /** disk { c-min-rate }, KiB/s. */
  cMinRateKiB: number;
}

/** drbd-utils' defaults (drbd_limits.h). */
export const RESYNC_DEFAULTS: ResyncControllerOptions = {
  resyncRateKiB: 250,
  cPlanAhead: 20,
  cFillTarget: 100,
  cDelayTarget: 10,
  cMaxRateKiB: 102400,
  cMinRateKiB: 250,
};

export class ResyncController {
  private readonly opts: ResyncControllerOptions;
  private readonly plan: number[];
  private head = 0;
  /** Sum of the plan's entries (rs_planed). */
  private planned = 0;
  /** Sectors requested and not yet answered (rs_in_flight). */
  private inFlight = 0;
  /** Recent turns: [time, sectors that arrived], for the c-min-rate check. */
  private readonly recent: Array<[number, number]> = [];

  constructor(opts: Partial<ResyncControllerOptions> = {}) {
    this.opts = { ...RESYNC_DEFAULTS, ...opts };
    this.plan = new Array<number>(Math.max(0, Math.floor(this.opts.cPlanAhead))).fill(0);
  }

  get dynamic(): boolean {
    return this.plan.length > 0;
  }

  /** Sectors asked for and not answered yet. */
  get sectorsInFlight(): number {
    return this.inFlight;
  }

  /** The requests of a turn were sent: `sectors` more in flight. */
  requested(sectors: number): void {
    this.inFlight += sectors;
  }

  /**
   * One turn: `sectIn` sectors were answered since the last turn. Returns the sectors to request now.
   * `now` (ms) and `appActive` (application I/O on the device since the last turn) drive c-min-rate.
   */
  turn(sectIn: number, now: number, appActive = false): number {
    this.inFlight = Math.max(0, this.inFlight - sectIn);
    this.recent.push([now, sectIn]);
    while (this.recent.length > 0 && now - (this.recent[0] as [number, number])[0] > 3000)
      this.recent.shift();
    const number = this.dynamic
      ? this.controller(sectIn)
      : (this.opts.resyncRateKiB * 2 * RESYNC_TURN_MS) / 1000;
    if (appActive && this.opts.cMinRateKiB > 0 && this.recentRateKiB(now) > this.opts.cMinRateKiB) return 0;
    // Fractions are kept: the caller carries what is less than a 4 KiB request into the next turn.
    return Math.max(0, number);
  }

  /** KiB/s answered over the last seconds. */
  recentRateKiB(now: number): number {
    if (this.recent.length === 0) return 0;
    const first = (this.recent[0] as [number, number])[0];
    const span = Math.max(RESYNC_TURN_MS, now - first + RESYNC_TURN_MS);
    const sectors = this.recent.reduce((n, [, s]) => n + s, 0);
    return (sectors / 2) * (1000 / span);
  }

  private controller(sectIn: number): number {
    const o = this.opts;
    const steps = this.plan.length;
    // The kernel's integer arithmetic (HZ / SLEEP_TIME = 10 turns per second), so the figures are its own.
    const perTurn = (kib: number) => Math.trunc((kib * 2 * RESYNC_TURN_MS) / 1000);
    const want =
      this.inFlight + sectIn === 0
        ? perTurn(o.resyncRateKiB) * steps
        : o.cFillTarget > 0
          ? o.cFillTarget
          : Math.trunc((sectIn * o.cDelayTarget * 1000) / (RESYNC_TURN_MS * 10));
    const correction = want - this.inFlight - this.planned;
    const cps = Math.trunc(correction / steps);
    for (let i = 0; i < steps; i++) this.plan[i] = (this.plan[i] as number) + cps;
    this.planned += cps * steps;
    const curr = this.plan[this.head] as number;
    this.plan[this.head] = 0;
    this.head = (this.head + 1) % steps;
    this.planned -= curr;
    return Math.min(Math.max(sectIn + curr, 0), perTurn(o.cMaxRateKiB));
  }
}
