/**
 * `serve` reports every bound portal in its machine-readable form, IPv6 in brackets, and an initiator
 * reaches the target through each; SendTargets lists every portal of the group.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { run, startServer, stopCleanly, cleanup } from "./harness.js";

const IQN = "iqn.2016-06.io.spdk:portals";

describe("portals", () => {
  it("listens on IPv4 and IPv6 portals of one group and reports them", async () => {
    const server = await startServer(
      (ports) => `[Malloc]
  NumberOfLuns 1
  LunSizeInMB 4
[PortalGroup1]
  Portal A 127.0.0.1:${ports[0]}
  Portal B [::1]:${ports[1]}
[InitiatorGroup1]
  InitiatorName ANY
  Netmask 127.0.0.1/32 [::1]/128
[TargetNode1]
  TargetName ${IQN}
  Mapping PortalGroup1 InitiatorGroup1
  LUN0 Malloc0
`,
      { portCount: 2 },
    );
    try {
      const [p4, p6] = server.ports;
      assert.deepEqual(server.listening, [`127.0.0.1:${p4}`, `[::1]:${p6}`]);
      for (const url of [`iscsi://127.0.0.1:${p4}/${IQN}/0`, `iscsi://[::1]:${p6}/${IQN}/0`]) {
        const r = await run("iscsi-inq", [url]);
        assert.equal(r.code, 0, `${url}: ${r.stderr}`);
        assert.match(r.stdout, /^Product:Malloc disk/m);
      }
      const ls = await run("iscsi-ls", [`iscsi://[::1]:${p6}`]);
      assert.equal(ls.code, 0, ls.stderr);
      assert.match(ls.stdout, new RegExp(`Portal:127\\.0\\.0\\.1:${p4},1`));
      assert.match(ls.stdout, new RegExp(`Portal:\\[::1\\]:${p6},1`));
    } finally {
      await stopCleanly(server);
      await cleanup(server.dir);
    }
  });
});
