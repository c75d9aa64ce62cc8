import { test } from "node:test";
import assert from "node:assert/strict";
import { InitiatorGroup, parseNetmask } from "../../src/iscsi/init_grp.js";

const CASES: { masks: string[]; addr: string; allowed: boolean }[] = [
  { masks: ["ANY"], addr: "10.1.2.3", allowed: true },
  { masks: ["127.0.0.1"], addr: "127.0.0.1", allowed: true },
  { masks: ["127.0.0.1"], addr: "127.0.0.5", allowed: false },
  { masks: ["192.168.2.0/24"], addr: "192.168.2.77", allowed: true },
  { masks: ["192.168.2.0/24"], addr: "192.168.3.1", allowed: false },
  { masks: ["10.0.0.0/8"], addr: "::ffff:10.9.9.9", allowed: true },
  { masks: ["[2001:db8::]/32"], addr: "2001:db8:1::5", allowed: true },
  { masks: ["[2001:db8::]/32"], addr: "2001:db9::5", allowed: false },
  { masks: ["[::1]"], addr: "::1", allowed: true },
  { masks: ["[::1]"], addr: "127.0.0.1", allowed: false },
];

for (const c of CASES) {
  test(`netmask ${c.masks.join(",")} ${c.allowed ? "admits" : "refuses"} ${c.addr}`, () => {
    const g = new InitiatorGroup({ tag: 1, initiators: ["ANY"], netmasks: c.masks });
    assert.equal(g.allowsAddress(c.addr), c.allowed);
  });
}

test("initiator names: ANY, exact (case-insensitive), and !name denial", () => {
  const g = new InitiatorGroup({ tag: 1, initiators: ["ANY", "!iqn.x:bad"], netmasks: ["ANY"] });
  assert.ok(g.allows("iqn.x:good", "1.2.3.4"));
  assert.ok(!g.allows("IQN.X:BAD", "1.2.3.4"));
  const only = new InitiatorGroup({ tag: 2, initiators: ["iqn.x:one"], netmasks: ["ANY"] });
  assert.ok(only.allowsName("IQN.x:One"));
  assert.ok(!only.allowsName("iqn.x:two"));
});

test("malformed netmasks are refused with the entry named", () => {
  assert.throws(() => parseNetmask("300.1.1.1"), /300\.1\.1\.1/);
  assert.throws(() => parseNetmask("10.0.0.0/33"), /prefix/);
  assert.throws(() => parseNetmask("[zz::1]/64"), /IPv6/);
});
