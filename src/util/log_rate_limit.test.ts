import assert from "node:assert/strict";
import { test } from "node:test";
import { Writable } from "node:stream";
import { pino } from "pino";
import type { Logger } from "./log.js";
import { LogRateLimiter } from "./log_rate_limit.js";

function capture(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(...chunk.toString().split("\n").filter(Boolean));
      cb();
    },
  });
  return { logger: pino({ level: "info" }, sink), lines };
}

test("log rate limit: a source gets perWindow lines, the rest is counted and reported once", async () => {
  const { logger, lines } = capture();
  let suppressed = 0;
  const limiter = new LogRateLimiter(3, 100, 5, () => suppressed++);
  const noisy = limiter.wrap(logger.child({ conn: 1 }), "10.0.0.1");
  for (let i = 0; i < 50; i++) noisy.child({ pdu: i }).warn("PDU rejected");
  const quiet = limiter.wrap(logger, "10.0.0.2");
  quiet.info("another source still logs");
  quiet.debug("below the level: neither written nor counted");
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(lines.length, 4);
  assert.equal(suppressed, 47);
  await new Promise((r) => setTimeout(r, 120));
  noisy.warn("next window");
  await new Promise((r) => setTimeout(r, 20));
  assert.match(lines[4]!, /47 log lines caused by 10\.0\.0\.1 were suppressed/);
  assert.match(lines[5]!, /next window/);
});

test("log rate limit: all sources together are capped too (an attacker with many addresses)", () => {
  const { logger, lines } = capture();
  const limiter = new LogRateLimiter(3, 10_000, 5);
  for (let a = 0; a < 100; a++) limiter.wrap(logger, `10.0.1.${a}`).warn("refused");
  assert.ok(lines.length <= 5);
});
