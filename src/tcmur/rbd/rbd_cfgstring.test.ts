import { test } from "node:test";
import assert from "node:assert/strict";
import { parseRbdPath } from "./rbd_cfgstring.js";
import { TcmurHandlerRegistry } from "../handler_registry.js";

test("rbd cfgstring: tcmu-runner's /rbd/<pool>[/<namespace>]/<image>;options", () => {
  assert.deepEqual(parseRbdPath("rbd/img0", "x"), {
    pool: "rbd",
    namespace: undefined,
    image: "img0",
    osdOpTimeout: undefined,
    conf: undefined,
    id: undefined,
  });
  assert.deepEqual(parseRbdPath("pool1/ns1/lun.6;osd_op_timeout=30;conf=/etc/ceph/c.conf;id=iscsi", "x"), {
    pool: "pool1",
    namespace: "ns1",
    image: "lun.6",
    osdOpTimeout: 30,
    conf: "/etc/ceph/c.conf",
    id: "iscsi",
  });
});

test("rbd cfgstring: errors name the line and what is wrong", () => {
  const where = "TCMUR 6 lun6 (/rbd/x)";
  assert.throws(() => parseRbdPath("justimage", where), /TCMUR 6 lun6 .*expected \/rbd\/<pool>/);
  assert.throws(() => parseRbdPath("a/b/c/d", where), /expected \/rbd\/<pool>/);
  assert.throws(
    () => parseRbdPath("rbd/img;osd_op_timeout=0", where),
    /osd_op_timeout=0 must be whole seconds/,
  );
  assert.throws(() => parseRbdPath("rbd/img;osd_op_timeout=3s", where), /osd_op_timeout=3s/);
  assert.throws(
    () => parseRbdPath("rbd/img;conf=ceph.conf", where),
    /conf=ceph.conf must be an absolute path/,
  );
  assert.throws(() => parseRbdPath("rbd/img;id=client.admin", where), /without "client\."/);
  assert.throws(() => parseRbdPath("rbd/img;rbd_cache=true", where), /unknown rbd option "rbd_cache"/);
});

test("rbd handler: a bad cfgstring is refused before any cluster is contacted", async () => {
  const reg = new TcmurHandlerRegistry();
  await assert.rejects(
    reg.open({ minor: 6, name: "lun6", cfgstring: "/rbd/onlyimage" }),
    /TCMUR lun6 \(\/rbd\/onlyimage\): expected/,
  );
});
