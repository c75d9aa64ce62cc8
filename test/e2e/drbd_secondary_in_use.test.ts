/**
 * `drbdadm secondary` on a device in use is refused as the kernel refuses it: while an initiator is
 * logged in to the LUN exported over r0 (BIO bio1 on drbd2), secondary fails with "State change
 * failed: (-12) Device is held open by someone", naming the LUN, and exits 11; the node stays Primary
 * and keeps serving the session. After the logout secondary succeeds. Ports: DRBD 7970-7979, iSCSI
 * 3546-3549.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { DrbdPair, IQN, rw10, until } from "./drbd_fixture.js";

const BS = 4096;

describe("drbdadm secondary on a device in use", () => {
  let pair: DrbdPair;
  before(async () => {
    pair = await DrbdPair.create("drbd-in-use", { drbdPorts: [7970, 7979], iscsiPorts: [3546, 3549] });
  });
  after(async () => {
    await pair.close();
  });

  it("is refused while a session is logged in, accepted after logout", { timeout: 3 * 60_000 }, async () => {
    await pair.start("alpha", "drbdadm_up_primary");
    await pair.start("beta", "drbdadm_up");
    await pair.waitInSync();

    const ini = await pair.session("alpha");
    const refused = await pair.adm("alpha", "secondary");
    assert.equal(refused.code, 11, refused.stderr);
    assert.equal(
      refused.stderr,
      `usertgt drbdadm: drbd2: State change failed: (-12) Device is held open by someone ` +
        `(BIO bio1 as LUN0 of ${IQN}: 1 session logged in)\n`,
    );
    assert.equal((await pair.status("alpha")).role, "Primary");
    // The server kept serving: the session writes and reads back.
    const data = Buffer.alloc(BS, 0x3c);
    assert.equal((await ini.scsi(rw10(0x2a, 7, 1), { write: data })).status, 0);
    const r = await ini.scsi(rw10(0x28, 7, 1), { read: BS });
    assert.equal(r.status, 0);
    assert.ok(r.data.equals(data));

    await ini.logout();
    ini.close();
    await until(
      "secondary accepted after the logout",
      async () => (await pair.adm("alpha", "secondary")).code === 0,
      10_000,
    );
    assert.equal((await pair.status("alpha")).role, "Secondary");
    await pair.stop("beta");
    await pair.stop("alpha");
  });
});
