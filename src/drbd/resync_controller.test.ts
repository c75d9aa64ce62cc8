import { test } from "node:test";
import assert from "node:assert/strict";
import { RESYNC_TURN_MS, ResyncController } from "./resync_controller.js";

/** A link whose replies to one turn's requests arrive `delay` turns later, at most `cap` sectors per turn. */
function simulate(
  c: ResyncController,
  turns: number,
  delay: number,
  cap = Infinity,
): { asked: number[]; inFlight: number[] } {
  const pending: number[] = [];
  let backlog = 0;
  const asked: number[] = [];
  const inFlight: number[] = [];
  for (let t = 0; t < turns; t++) {
    backlog += pending[t] ?? 0;
    const arrived = Math.min(backlog, cap);
    backlog -= arrived;
    const n = c.turn(arrived, t * RESYNC_TURN_MS);
    // What the controller steers: sectors outstanding when it decides (before this turn's requests).
    inFlight.push(c.sectorsInFlight);
    c.requested(n);
    pending[t + delay] = (pending[t + delay] ?? 0) + n;
    asked.push(n);
  }
  return { asked, inFlight };
}

test("c-plan-ahead 0: a fixed resync-rate per 100 ms turn, whatever is in flight", () => {
  const c = new ResyncController({ cPlanAhead: 0, resyncRateKiB: 1000 });
  assert.equal(c.dynamic, false);
  const { asked } = simulate(c, 20, 3);
  assert.deepEqual(new Set(asked), new Set([200])); // 1000 KiB/s = 2000 sectors/s = 200 per turn
});

test("dynamic: starts at resync-rate and settles with c-fill-target sectors in flight", () => {
  const c = new ResyncController({ resyncRateKiB: 500, cFillTarget: 1000, cPlanAhead: 20 });
  const { asked, inFlight } = simulate(c, 300, 2);
  assert.equal(asked[0], 100, "first turn: resync-rate worth of a turn");
  const tail = inFlight.slice(-50);
  for (const f of tail) assert.ok(Math.abs(f - 1000) <= 100, `in flight ${f}, want about 1000`);
});

test("dynamic: a slow link is not flooded; c-max-rate caps a fast one", () => {
  const slow = new ResyncController({ cFillTarget: 2000, cPlanAhead: 10 });
  const s = simulate(slow, 300, 1, 150);
  // What is in flight stays near the fill target although the link drains only 150 sectors a turn.
  assert.ok(Math.max(...s.inFlight.slice(-50)) <= 2400, `in flight grew to ${Math.max(...s.inFlight)}`);
  const capped = new ResyncController({ cFillTarget: 1 << 20, cMaxRateKiB: 4000, cPlanAhead: 5 });
  const f = simulate(capped, 100, 1);
  assert.ok(Math.max(...f.asked) <= 800, `asked ${Math.max(...f.asked)} > 4000 KiB/s worth (800 sectors)`);
  assert.equal(f.asked.at(-1), 800);
});

test("c-fill-target 0: keeps c-delay-target worth of replies in flight", () => {
  // A link draining 150 sectors a turn: the controller keeps about 5 turns (0.5 s) of them in flight.
  const c = new ResyncController({ cFillTarget: 0, cDelayTarget: 5, cPlanAhead: 20, cMaxRateKiB: 100000 });
  const { inFlight } = simulate(c, 400, 1, 150);
  for (const f of inFlight.slice(-50)) assert.ok(Math.abs(f - 750) <= 150, `in flight ${f}, want about 750`);
  // A link faster than the delay target: the rate climbs to c-max-rate.
  const fast = new ResyncController({ cFillTarget: 0, cDelayTarget: 5, cPlanAhead: 20, cMaxRateKiB: 4000 });
  assert.equal(simulate(fast, 200, 1).asked.at(-1), 800);
});

test("c-min-rate: with application I/O a resync faster than c-min-rate backs off; 0 disables", () => {
  const c = new ResyncController({ cPlanAhead: 0, resyncRateKiB: 10000, cMinRateKiB: 1000 });
  let t = 0;
  for (; t < 10; t++) c.turn(2000, t * RESYNC_TURN_MS); // 10 MB/s arriving
  assert.equal(c.turn(2000, t++ * RESYNC_TURN_MS, true), 0, "application I/O: back off");
  assert.equal(c.turn(2000, t++ * RESYNC_TURN_MS, false), 2000, "no application I/O: full rate");
  const never = new ResyncController({ cPlanAhead: 0, resyncRateKiB: 10000, cMinRateKiB: 0 });
  for (t = 0; t < 10; t++) never.turn(2000, t * RESYNC_TURN_MS);
  assert.equal(never.turn(2000, t * RESYNC_TURN_MS, true), 2000);
});

/**
 * drbd_rs_number_requests' caller on a link that answers every request before the next turn: whole 4 KiB
 * requests (`>> 3`), the rest of a turn dropped. Returns the sectors each turn's controller gave.
 */
function fastLinkTurns(c: ResyncController, turns: number): number[] {
  const out: number[] = [];
  let answered = 0;
  for (let t = 0; t < turns; t++) {
    const n = c.turn(answered, t * RESYNC_TURN_MS);
    out.push(n);
    const sectors = Math.floor(n / 8) * 8;
    c.requested(sectors);
    answered = sectors;
  }
  return out;
}

test("8.4 defaults on a fast link: the kernel's figures, a ramp of one 4 KiB block per turn", () => {
  // drbd_rs_controller by hand for resync-rate 250, c-plan-ahead 20, c-fill-target 100: the first turn
  // asks for resync-rate's worth (50 sectors), the plan then adds 8-9 sectors a turn.
  const c = new ResyncController();
  assert.equal(c.dynamic, true, "c-plan-ahead 20 by default");
  const turns = fastLinkTurns(c, 600);
  assert.deepEqual(turns.slice(0, 12), [50, 56, 64, 72, 80, 89, 97, 106, 114, 123, 131, 140]);
  const kibPerSecond = (n: number) => (Math.floor(n / 8) * 4 * 1000) / RESYNC_TURN_MS;
  assert.equal(kibPerSecond(turns[9] as number), 600, "after 1 s");
  assert.equal(kibPerSecond(turns[99] as number), 4080, "after 10 s");
  assert.equal(kibPerSecond(turns[599] as number), 24080, "after 60 s: still far below c-max-rate");
  // 256 MiB takes some 36 s (measured with the kernel's algorithm; docs/benchmarks-drbd.md: 35 s, 7.7 MB/s).
  let kib = 0;
  let t = 0;
  while (kib < 256 * 1024) kib += kibPerSecond(turns[t++] as number) / 10;
  assert.equal(Math.round(t / 10), 36);
});

test("a large c-fill-target on a fast link reaches c-max-rate within a second and stays there", () => {
  // c-max-rate 20 MiB/s = 4096 sectors per turn.
  const c = new ResyncController({ cFillTarget: 1 << 20, cMaxRateKiB: 20480 });
  const turns = fastLinkTurns(c, 100);
  const first = turns.findIndex((n) => n === 4096);
  assert.ok(first >= 0 && first < 10, `c-max-rate reached at turn ${first}`);
  assert.ok(turns.slice(first).every((n) => n === 4096));
});
