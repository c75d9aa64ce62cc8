// Records the raw bytes a kernel DRBD 8.4 peer sends in its handshake (for src/drbd/protocol.test.ts): stands
// in for usertgt at 10.77.0.1:7861 (run inside the netns while the guest's r0 is up and WFConnection), accepts
// the kernel's data and meta sockets, answers P_CONNECTION_FEATURES and P_PROTOCOL with usertgt's encoders,
// then keeps what the kernel sends for 3 s and prints it as JSON (hex per socket, in arrival order).
//   ip netns exec usertgt-kpeer node bench/drbd_kernel_peer/capture.mjs > /tmp/kernel-handshake.json
import { createServer } from "node:net";
import {
  DrbdCommand,
  encodeConnectionFeatures,
  encodeProtocol,
  frame,
  PRO_VERSION_MAX,
  PRO_VERSION_MIN,
} from "../../dist/src/drbd/protocol.js";

const got = { data: [], meta: [] };
const sockets = {};
const server = createServer((s) => {
  s.once("data", (first) => {
    // The kernel names each socket it opens with an h80 header of P_INITIAL_DATA (0xfff2) or _META (0xfff1).
    const kind = first.readUInt16BE(4) === DrbdCommand.InitialData ? "data" : "meta";
    sockets[kind] = s;
    got[kind].push(first);
    s.on("data", (c) => got[kind].push(c));
    if (sockets.data && sockets.meta) start();
  });
});
server.listen(7861, process.env.UTGT_ADDR ?? "10.77.0.1");

function start() {
  const send = (cmd, payload, v) => sockets.data.write(Buffer.concat(frame(cmd, payload, v)));
  send(
    DrbdCommand.ConnectionFeatures,
    encodeConnectionFeatures({ protocolMin: PRO_VERSION_MIN, protocolMax: PRO_VERSION_MAX, featureFlags: 0 }),
    0,
  );
  const params = {
    protocol: 3,
    afterSb0p: 0,
    afterSb1p: 0,
    afterSb2p: 0,
    connFlags: 0,
    twoPrimaries: false,
    integrityAlg: "",
  };
  setTimeout(() => send(DrbdCommand.Protocol, encodeProtocol(params, 101), 101), 300);
  setTimeout(() => {
    console.log(
      JSON.stringify(
        { data: Buffer.concat(got.data).toString("hex"), meta: Buffer.concat(got.meta).toString("hex") },
        null,
        1,
      ),
    );
    for (const s of Object.values(sockets)) s.destroy();
    server.close();
  }, 3000);
}
setTimeout(() => {
  console.error("capture: the kernel did not connect within 30 s");
  process.exit(1);
}, 30000).unref();
