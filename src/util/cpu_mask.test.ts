import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { formatCpuList, parseCpuMask } from "./cpu_mask.js";

describe("parseCpuMask (SPDK's cpumask notation)", () => {
  it("reads hexadecimal masks with and without 0x", () => {
    assert.deepEqual(parseCpuMask("0x1"), [0]);
    assert.deepEqual(parseCpuMask("0x3"), [0, 1]);
    assert.deepEqual(parseCpuMask("F0"), [4, 5, 6, 7]);
    assert.deepEqual(parseCpuMask("0X101"), [0, 8]);
  });

  it("reads bracketed lists and ranges", () => {
    assert.deepEqual(parseCpuMask("[0]"), [0]);
    assert.deepEqual(parseCpuMask("[0,2-3]"), [0, 2, 3]);
    assert.deepEqual(parseCpuMask("[ 5 , 1-2 ]"), [1, 2, 5]);
  });

  it("refuses what is not a mask, naming it", () => {
    assert.throws(() => parseCpuMask("0x0"), /CPU mask "0x0" names no CPU/);
    assert.throws(() => parseCpuMask("zz"), /CPU mask "zz" is neither a hexadecimal mask/);
    assert.throws(() => parseCpuMask("[1-"), /must end with "\]"/);
    assert.throws(() => parseCpuMask("[3-1]"), /range 3-1 runs backwards/);
    assert.throws(() => parseCpuMask("[a]"), /"a" is not a CPU number or range/);
    assert.throws(() => parseCpuMask("[]"), /names no CPU/);
    assert.throws(() => parseCpuMask("[4096]"), /CPU 4096 is beyond 1023/);
  });
});

describe("formatCpuList", () => {
  it("writes runs as ranges", () => {
    assert.equal(formatCpuList([0, 1, 2, 3, 6]), "0-3,6");
    assert.equal(formatCpuList([1]), "1");
    assert.equal(formatCpuList([0, 2, 4, 5]), "0,2,4-5");
  });
});
