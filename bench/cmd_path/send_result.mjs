// In-process cost of sendScsiResult (4 KiB read and write results alternating) to a sink that never
// pushes back. Run from a built tree: node bench/cmd_path/send_result.mjs /path/to/worktree
const root = process.argv[2];
const N = 1000000;
const { sendScsiResult } = await import(`${root}/dist/src/iscsi/datain.js`);
const { ScsiTask, ITNexus } = await import(`${root}/dist/src/scsi/task.js`);
const nexus = new ITNexus("iqn.i", "000000000001", "iqn.x:d", 1);
let sent = 0;
const sink = {
  maxSendSegment: 262144,
  maxBurstLength: 262144,
  sendStatus: () => {
    sent++;
    return true;
  },
  sendData: () => {
    sent++;
    return true;
  },
  drained: () => Promise.resolve(),
};
const buf = Buffer.alloc(4096);
const cdb = Buffer.alloc(16);
async function one(read) {
  const t = new ScsiTask(cdb, 0, 1, "simple", nexus, 4096, read, !read, []);
  if (read) t.dataIn = [buf];
  else t.transferLength = 4096;
  const p = sendScsiResult(sink, t, 0);
  if (p) await p;
}
async function run(n) {
  for (let i = 0; i < n; i++) await one(i & 1);
}
await run(100000);
const c0 = process.cpuUsage();
await run(N);
const c = process.cpuUsage(c0);
console.log(
  `${root.split("/").pop()} cpu_ns_per_result=${(((c.user + c.system) * 1000) / N).toFixed(0)} sent=${sent}`,
);
