/**
 * Two-node DRBD fixture for the DRBD end-to-end tests: one .res with `on alpha` (127.0.0.1) and
 * `on beta` (127.0.0.2), each node a real `usertgt serve` child process backing drbd2 with its own TCMUR
 * file device (files survive a kill -9, RAM devices would not) and exporting it as LUN 0 through a BIO
 * bdev whose helper is `drbdadm_up_primary` or `drbdadm_up`. Control through `usertgt drbdadm` and the
 * `drbd_status` RPC; data through RawInitiator sessions; a load writer that records every acknowledged
 * WRITE so that a test can check each one after a crash.
 *
 * Ports: this fixture's tests own DRBD 7810-7839 and iSCSI 3440-3469 (drbd_pair keeps 7800-7809 /
 * 3420-3439 by passing its own ranges).
 */
import assert from "node:assert/strict";
import { open, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { RpcClient } from "../../src/rpc/client.js";
import { RawInitiator } from "../support/raw_initiator.js";
import { freePorts } from "./drbd_ports.js";
import { cleanup, makeTempDir, runCli, startServer, type RunResult, type RunningServer } from "./harness.js";

export const IQN = "iqn.2016-06.io.spdk:drbdpair";
export type NodeName = "alpha" | "beta";
export type Helper = "drbdadm_up_primary" | "drbdadm_up";

export interface PairOptions {
  /** net { protocol X; } — default C. */
  readonly protocol?: "A" | "B" | "C";
  /** Extra `net { }` statements, e.g. "verify-alg sha1;". */
  readonly net?: string;
  /** Extra `disk { }` statements (resync-rate 100M is always there unless given here). */
  readonly disk?: string;
  /** A `handlers { }` section's statements, e.g. `fence-peer "/bin/sh /tmp/x/fence.sh";`. */
  readonly handlers?: string;
  readonly sizeMiB?: number;
  readonly blockSize?: number;
  /** The TCMUR handler of the backing files (default "file"; "faulty" needs --handler-dir, see test/support). */
  readonly tcmurHandler?: string;
  /**
   * The backing files are created at sizeMiB and the TCMUR lines carry no `size=`: the devices are as big
   * as their files, also after they grew (`drbdadm resize` rescans them).
   */
  readonly sizeFromFile?: boolean;
  /** Port ranges [first, last]; default this fixture's (DRBD 7810-7839, iSCSI 3440-3469). */
  readonly drbdPorts?: readonly [number, number];
  readonly iscsiPorts?: readonly [number, number];
  /**
   * 2: the resource has a second volume (`volume 1`, drbd3 minor 3 on file_c, the node's `file1`), exported
   * as LUN1 (drbd_volumes.test.ts).
   */
  readonly volumes?: 1 | 2;
}

/** What `drbd_status` reports for one resource (src/server/drbd_wiring.ts resourceJson). */
export interface DrbdResStatus {
  name: string;
  role: string;
  disk: string;
  connection?: string;
  peer_role?: string;
  peer_disk?: string;
  done?: number;
  out_of_sync_kib?: number;
  uuids?: string[];
  resync?: { total_bits: number; requests: number; requested_blocks: number };
  sync_decision?: { result: number; rule: number };
  last_error?: string;
}

export interface PairNode {
  readonly name: NodeName;
  readonly host: string;
  readonly iscsiPort: number;
  readonly drbdPort: number;
  readonly sock: string;
  readonly file: string;
  /** The second volume's backing file (PairOptions.volumes 2). */
  readonly file1: string;
  server: RunningServer | undefined;
}

export function rw10(opcode: 0x28 | 0x2a, lba: number, blocks: number): Buffer {
  const cdb = Buffer.alloc(10);
  cdb[0] = opcode;
  cdb.writeUInt32BE(lba, 2);
  cdb.writeUInt16BE(blocks, 7);
  return cdb;
}

/** Polls `fn` every 200 ms until true; throws naming `what` (and the last detail) after `ms`. */
export async function until(
  what: string,
  fn: () => Promise<boolean>,
  ms = 60000,
  detail?: () => Promise<string>,
): Promise<void> {
  const end = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > end)
      throw new Error(`${what}: not reached in ${ms} ms${detail ? `; ${await detail()}` : ""}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export class DrbdPair {
  readonly nodes: Record<NodeName, PairNode>;
  readonly blockSize: number;
  readonly sizeMiB: number;
  private readonly tcmurHandler: string;
  private readonly sizeFromFile: boolean;
  readonly volumes: 1 | 2;

  private constructor(
    readonly dir: string,
    readonly resPath: string,
    drbd: number[],
    iscsi: number[],
    opts: PairOptions,
  ) {
    this.blockSize = opts.blockSize ?? 4096;
    this.sizeMiB = opts.sizeMiB ?? 16;
    this.tcmurHandler = opts.tcmurHandler ?? "file";
    this.sizeFromFile = opts.sizeFromFile === true;
    this.volumes = opts.volumes ?? 1;
    const mk = (name: NodeName, host: string, i: number): PairNode => ({
      name,
      host,
      iscsiPort: iscsi[i] as number,
      drbdPort: drbd[i] as number,
      sock: join(dir, `${name}.sock`),
      file: join(dir, `${name}.img`),
      file1: join(dir, `${name}-v1.img`),
      server: undefined,
    });
    this.nodes = { alpha: mk("alpha", "127.0.0.1", 0), beta: mk("beta", "127.0.0.2", 1) };
  }

  static async create(label: string, opts: PairOptions = {}): Promise<DrbdPair> {
    const dir = await makeTempDir(label);
    const [df, dl] = opts.drbdPorts ?? [7810, 7839];
    const [pf, pl] = opts.iscsiPorts ?? [3440, 3469];
    const drbd = await freePorts(2, df, dl);
    const iscsi = await freePorts(2, pf, pl);
    const resPath = join(dir, "r0.res");
    const pair = new DrbdPair(dir, resPath, drbd, iscsi, opts);
    await writeFile(resPath, pair.res(opts));
    if (pair.sizeFromFile)
      for (const n of Object.values(pair.nodes)) {
        const fh = await open(n.file, "w");
        await fh.truncate(pair.sizeMiB * 1024 * 1024);
        await fh.close();
      }
    return pair;
  }

  private res(opts: PairOptions): string {
    const vol = (host: string, port: number) => `
        address ${host}:${port};
        volume 0 { device drbd2 minor 2; disk "/UMCfuse/dev/file_b"; meta-disk internal; }${
          this.volumes === 2
            ? `
        volume 1 { device drbd3 minor 3; disk "/UMCfuse/dev/file_c"; meta-disk internal; }`
            : ""
        }`;
    return `resource r0 {
    net { protocol ${opts.protocol ?? "C"}; ${opts.net ?? ""} }
    disk { ${opts.disk ?? "resync-rate 100M;"} }${
      opts.handlers !== undefined
        ? `
    handlers { ${opts.handlers} }`
        : ""
    }
    on alpha {${vol("127.0.0.1", this.nodes.alpha.drbdPort)}
    }
    on beta {${vol("127.0.0.2", this.nodes.beta.drbdPort)}
    }
}
`;
  }

  private config(n: PairNode, helper: Helper): string {
    const two = this.volumes === 2;
    return `[TCMUR]
  TCMUR 2 file_b /${this.tcmurHandler}/${n.file}${this.sizeFromFile ? "" : ` size=${this.sizeMiB}M`} bs=${this.blockSize}
${two ? `  TCMUR 3 file_c /${this.tcmurHandler}/${n.file1} size=${this.sizeMiB}M bs=${this.blockSize}\n` : ""}[BIO]
  BIO bio1 /UMCfuse/dev/drbd2 ${helper} r0 /UMCfuse/dev/file_b
${two ? `  BIO bio2 /UMCfuse/dev/drbd3 ${helper} r0 /UMCfuse/dev/file_c\n` : ""}[PortalGroup1]
  Portal A ${n.host}:${n.iscsiPort}
[InitiatorGroup1]
  InitiatorName ANY
  Netmask ${n.host}/32
[TargetNode1]
  TargetName ${IQN}
  Mapping PortalGroup1 InitiatorGroup1
  AuthMethod None
  LUN0 bio1
${two ? "  LUN1 bio2\n" : ""}`;
  }

  /** Starts `usertgt serve` for a node (its BIO helper brings r0 up); resolves once it printed "ready". */
  async start(name: NodeName, helper: Helper, extraArgs: readonly string[] = []): Promise<RunningServer> {
    const n = this.nodes[name];
    assert.equal(n.server, undefined, `${name} already running`);
    const server = await startServer(() => this.config(n, helper), {
      dir: this.dir,
      readyTimeoutMs: 40000,
      args: [
        "--no-fuse",
        "--drbd-config",
        this.resPath,
        "--node-name",
        name,
        "--rpc-socket",
        n.sock,
        "--state-dir",
        join(this.dir, `state-${name}`),
        "--log-level",
        "info",
        ...extraArgs,
      ],
    });
    n.server = server;
    return server;
  }

  /** kill -9: the process gets no chance to write clean metadata. */
  async kill(name: NodeName): Promise<void> {
    const s = this.nodes[name].server;
    if (!s) return;
    s.child.kill("SIGKILL");
    await s.stop();
    this.nodes[name].server = undefined;
  }

  /** SIGTERM; asserts the clean-shutdown contract (exit 0, "usertgt: stopped"). */
  async stop(name: NodeName): Promise<void> {
    const s = this.nodes[name].server;
    if (!s) return;
    const code = await s.stop();
    this.nodes[name].server = undefined;
    assert.equal(code, 0, `${name} exit code after SIGTERM; stderr tail:\n${s.stderr().slice(-4000)}`);
    assert.match(s.stderr(), /^usertgt: stopped$/m);
  }

  /** Kills whatever still runs and removes the temp dir. */
  async close(): Promise<void> {
    for (const name of ["alpha", "beta"] as const) await this.kill(name);
    await cleanup(this.dir);
  }

  stderr(name: NodeName): string {
    return this.nodes[name].server?.stderr() ?? "";
  }

  /** `usertgt drbdadm -s SOCK CMD r0 [flags]`. */
  adm(name: NodeName, command: string, ...flags: string[]): Promise<RunResult> {
    return runCli(["drbdadm", "-s", this.nodes[name].sock, command, "r0", ...flags], 60000);
  }

  /** The same, asserting success. */
  async admOk(name: NodeName, command: string, ...flags: string[]): Promise<void> {
    const r = await this.adm(name, command, ...flags);
    assert.equal(r.code, 0, `drbdadm ${command} on ${name}: ${r.stderr}`);
  }

  async statusText(name: NodeName): Promise<string> {
    return this.rpc(name, async (c) => {
      const r = (await c.call("drbd_status", { resource: "r0" })) as { status: string };
      return r.status;
    });
  }

  async status(name: NodeName): Promise<DrbdResStatus> {
    return this.rpc(name, async (c) => {
      const r = (await c.call("drbd_status", { resource: "r0" })) as unknown as {
        resources: DrbdResStatus[];
      };
      return r.resources[0] as DrbdResStatus;
    });
  }

  /** One RPC call on a node's socket. */
  rpcCall(name: NodeName, method: string, params: Record<string, string>): Promise<unknown> {
    return this.rpc(name, (c) => c.call(method, params));
  }

  private async rpc<T>(name: NodeName, fn: (c: RpcClient) => Promise<T>): Promise<T> {
    const c = await RpcClient.connect(this.nodes[name].sock, 10000);
    try {
      return await fn(c);
    } finally {
      c.close();
    }
  }

  /** Waits until both nodes report Connected (no resync running) and both disks UpToDate. */
  async waitInSync(ms = 60000): Promise<void> {
    await until(
      "both nodes Connected and UpToDate",
      async () => {
        for (const name of ["alpha", "beta"] as const) {
          const s = await this.status(name);
          if (s.connection !== "Connected" || s.disk !== "UpToDate" || s.peer_disk !== "UpToDate")
            return false;
        }
        return true;
      },
      ms,
      async () =>
        `alpha ${JSON.stringify(await this.status("alpha"))} beta ${JSON.stringify(await this.status("beta"))}\n` +
        `alpha log:\n${this.drbdLog("alpha")}\nbeta log:\n${this.drbdLog("beta")}`,
    );
  }

  /** The last DRBD log lines (module drbd / drbd-conn) a node wrote, for failure messages. */
  drbdLog(name: NodeName, lines = 20): string {
    return this.stderr(name)
      .split("\n")
      .filter((l) => l.includes('"module":"drbd'))
      .slice(-lines)
      .join("\n");
  }

  /** A logged-in iSCSI session on a node's portal, past the power-on unit attentions. */
  async session(name: NodeName, tag = 0): Promise<RawInitiator> {
    const n = this.nodes[name];
    const ini = await RawInitiator.connect(n.iscsiPort, n.host, n.host);
    ini.isid = Buffer.from([0x80, 0x12, 0x34, 0x56, tag >> 8, tag & 0xff]);
    const login = await ini.login({ targetName: IQN, initiatorName: `iqn.2024-01.test:drbd${tag}` });
    assert.equal(login.statusClass, 0, `login status ${login.statusClass}/${login.statusDetail}`);
    for (let i = 0; i < 4; i++) {
      const tur = await ini.scsi(Buffer.alloc(6));
      if (tur.status === 0) return ini;
      assert.equal(tur.sense[2] & 0x0f, 0x06, `TEST UNIT READY: ${tur.status} ${tur.sense.toString("hex")}`);
    }
    assert.fail("unit attentions did not clear after 4 TEST UNIT READY");
  }

  /** READ CAPACITY(10) of the LUN: the DRBD device's usable blocks (the lower device less the metadata). */
  async usableBlocks(name: NodeName): Promise<number> {
    const ini = await this.session(name, 0x7f);
    try {
      const cdb = Buffer.alloc(10);
      cdb[0] = 0x25;
      const r = await ini.scsi(cdb, { read: 8 });
      assert.equal(r.status, 0, `READ CAPACITY: ${r.sense.toString("hex")}`);
      assert.equal(r.data.readUInt32BE(4), this.blockSize);
      return r.data.readUInt32BE(0) + 1;
    } finally {
      ini.close();
    }
  }

  /** The first `bytes` of both backing files are equal (the data area; the metadata at the end differs). */
  async assertFilesEqual(bytes: number): Promise<void> {
    const chunk = 1 << 20;
    const fa = await open(this.nodes.alpha.file, "r");
    const fb = await open(this.nodes.beta.file, "r");
    try {
      const a = Buffer.alloc(chunk);
      const b = Buffer.alloc(chunk);
      for (let off = 0; off < bytes; off += chunk) {
        const len = Math.min(chunk, bytes - off);
        await fa.read(a, 0, len, off);
        await fb.read(b, 0, len, off);
        if (!a.subarray(0, len).equals(b.subarray(0, len))) {
          let i = 0;
          while (a[i] === b[i]) i++;
          const at = off + i;
          assert.fail(
            `backing files differ at byte ${at} (block ${Math.floor(at / this.blockSize)} of ${this.blockSize})`,
          );
        }
      }
    } finally {
      await fa.close();
      await fb.close();
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Load with a record of every acknowledged write.

const MAGIC = 0xd8bd0c0d;

/** One block of a write: (magic, lba, writer, counter) repeated over the block, so any torn mix shows. */
export function blockPattern(bs: number, lba: number, writer: number, counter: number): Buffer {
  const b = Buffer.alloc(bs);
  for (let o = 0; o < bs; o += 16) {
    b.writeUInt32BE(MAGIC, o);
    b.writeUInt32BE(lba, o + 4);
    b.writeUInt32BE(writer, o + 8);
    b.writeUInt32BE(counter, o + 12);
  }
  return b;
}

export interface LoadOptions {
  readonly sessions: number;
  /** Blocks per WRITE. */
  readonly blocksPerWrite: number;
  /** Blocks [first, last) the writers spread over (each writer owns every sessions-th run). */
  readonly firstBlock: number;
  readonly lastBlock: number;
  /** Session tags start here (ISIDs must differ per session). */
  readonly tagBase?: number;
}

/**
 * `sessions` RawInitiator sessions, each writing runs of its own at random places in a loop until stop()
 * (or until its connection dies). `acked` has, per block, the writer and counter of the last WRITE that
 * returned GOOD; `pending` the blocks of the WRITE each writer had in flight when it stopped.
 */
export class LoadWriter {
  readonly acked = new Map<number, { writer: number; counter: number }>();
  readonly pending: { lba: number; blocks: number; writer: number; counter: number }[] = [];
  writes = 0;
  failures: string[] = [];
  private stopping = false;
  private loops: Promise<void>[] = [];
  private sessions: RawInitiator[] = [];

  constructor(
    private readonly pair: DrbdPair,
    private readonly node: NodeName,
    private readonly opts: LoadOptions,
  ) {}

  async start(): Promise<void> {
    const tag = this.opts.tagBase ?? 1;
    for (let w = 0; w < this.opts.sessions; w++)
      this.sessions.push(await this.pair.session(this.node, tag + w));
    this.loops = this.sessions.map((s, w) => this.loop(s, w));
  }

  private async loop(ini: RawInitiator, writer: number): Promise<void> {
    const { blocksPerWrite: n, firstBlock, lastBlock, sessions } = this.opts;
    const bs = this.pair.blockSize;
    const runs = Math.floor((lastBlock - firstBlock) / n);
    const mine = Math.floor(runs / sessions);
    let counter = 0;
    while (!this.stopping) {
      const run = (Math.floor(Math.random() * mine) * sessions + writer) % runs;
      const lba = firstBlock + run * n;
      counter++;
      const data = Buffer.concat(
        Array.from({ length: n }, (_, i) => blockPattern(bs, lba + i, writer, counter)),
      );
      const inFlight = { lba, blocks: n, writer, counter };
      let r;
      try {
        r = await ini.scsi(rw10(0x2a, lba, n), { write: data });
      } catch (e) {
        // The connection died with the WRITE in flight: its blocks may or may not have been written.
        this.pending.push(inFlight);
        if (!this.stopping) this.failures.push(`writer ${writer}: ${(e as Error).message}`);
        return;
      }
      if (r.status !== 0) {
        this.pending.push(inFlight);
        this.failures.push(`writer ${writer}: WRITE status ${r.status} sense ${r.sense.toString("hex")}`);
        return;
      }
      for (let i = 0; i < n; i++) this.acked.set(lba + i, { writer, counter });
      this.writes++;
    }
  }

  /** Resolves once at least `count` WRITEs were acknowledged (or throws if all writers stopped). */
  async waitWrites(count: number, ms = 60000): Promise<void> {
    await until(
      `${count} acknowledged WRITEs`,
      async () => {
        if (this.failures.length >= this.opts.sessions) throw new Error(this.failures.join("; "));
        return this.writes >= count;
      },
      ms,
    );
  }

  /** Stops the writers after their current WRITE and closes the sessions. */
  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(this.loops);
    for (const s of this.sessions) s.close();
  }

  /** The writers' connections were cut (kill -9 of the target): wait for every loop to end. */
  async lost(): Promise<void> {
    await Promise.all(this.loops);
    this.stopping = true;
    for (const s of this.sessions) s.close();
  }

  /**
   * Reads every block written (acknowledged or in flight) through a node's LUN and checks it: an acknowledged
   * block holds its last acknowledged pattern, or the pattern of the WRITE in flight over it when the load
   * stopped. Returns the number of acknowledged blocks checked.
   */
  async verify(name: NodeName): Promise<number> {
    const bs = this.pair.blockSize;
    const inFlight = new Map<number, { writer: number; counter: number }>();
    for (const p of this.pending)
      for (let i = 0; i < p.blocks; i++) inFlight.set(p.lba + i, { writer: p.writer, counter: p.counter });
    const ini = await this.pair.session(name, 0x7e);
    let checked = 0;
    try {
      const lbas = [...this.acked.keys()].sort((a, b) => a - b);
      for (let i = 0; i < lbas.length;) {
        // Read consecutive runs of up to 64 blocks in one command.
        const start = lbas[i] as number;
        let end = start + 1;
        while (i + 1 < lbas.length && lbas[i + 1] === end && end - start < 64) {
          i++;
          end++;
        }
        i++;
        const r = await ini.scsi(rw10(0x28, start, end - start), { read: (end - start) * bs });
        assert.equal(r.status, 0, `READ ${start}+${end - start} on ${name}: ${r.sense.toString("hex")}`);
        for (let lba = start; lba < end; lba++) {
          const got = r.data.subarray((lba - start) * bs, (lba - start + 1) * bs);
          const want = this.acked.get(lba) as { writer: number; counter: number };
          if (got.equals(blockPattern(bs, lba, want.writer, want.counter))) {
            checked++;
            continue;
          }
          const alt = inFlight.get(lba);
          if (alt && got.equals(blockPattern(bs, lba, alt.writer, alt.counter))) {
            checked++;
            continue;
          }
          assert.fail(
            `block ${lba} on ${name}: acknowledged writer ${want.writer} #${want.counter}, read ` +
              `${got.readUInt32BE(0).toString(16)} lba ${got.readUInt32BE(4)} writer ${got.readUInt32BE(8)} #${got.readUInt32BE(12)}`,
          );
        }
      }
    } finally {
      ini.close();
    }
    return checked;
  }
}
