/**
 * Shared set-up for the iSCSI transport tests: an IscsiTarget on 127.0.0.1 (ephemeral port) with
 * one or more MemoryDevice-backed target nodes, silent logging unless USERTGT_LOG says otherwise.
 */
import { execFile } from "node:child_process";
import { pino } from "pino";
import { IscsiTarget } from "../../src/iscsi/target.js";
import {
  DEFAULT_ISCSI_OPTIONS,
  type AuthGroup,
  type IscsiGlobalOptions,
  type InitiatorGroupConfig,
  type TargetNodeConfig,
} from "../../src/iscsi/options.js";
import { MemoryDevice } from "./memory_device.js";

export const TARGET = "iqn.2016-06.io.spdk:disk1";

export interface HarnessOptions {
  globals?: Partial<IscsiGlobalOptions>;
  targets?: Partial<TargetNodeConfig>[];
  initiatorGroups?: InitiatorGroupConfig[];
  authGroups?: AuthGroup[];
  portals?: { host: string; port: number }[];
}

export interface Harness {
  target: IscsiTarget;
  port: number;
  devices: MemoryDevice[];
  stop(): Promise<void>;
}

export async function startTarget(opts: HarnessOptions = {}): Promise<Harness> {
  const devices: MemoryDevice[] = [];
  const specs = opts.targets ?? [{}];
  const targets: TargetNodeConfig[] = specs.map((t, i) => {
    const device = (t.device as MemoryDevice | undefined) ?? new MemoryDevice(`Mem${i}`);
    devices.push(device);
    return {
      name: i === 0 ? TARGET : `iqn.2016-06.io.spdk:disk${i + 1}`,
      maps: [{ portalGroup: 1, initiatorGroup: 1 }],
      auth: { disableChap: true, requireChap: false, mutualChap: false },
      digest: { headerRequired: false, dataRequired: false },
      queueDepth: 32,
      ...t,
      device,
    };
  });
  const target = new IscsiTarget(
    {
      globals: { ...DEFAULT_ISCSI_OPTIONS, ...opts.globals },
      authGroups: opts.authGroups ?? [],
      portalGroups: [{ tag: 1, portals: opts.portals ?? [{ host: "127.0.0.1", port: 0 }] }],
      initiatorGroups: opts.initiatorGroups ?? [{ tag: 1, initiators: ["ANY"], netmasks: ["ANY"] }],
      targets,
    },
    pino({ level: process.env.USERTGT_LOG ?? "silent" }),
  );
  await target.start();
  return { target, port: target.addresses()[0].port, devices, stop: () => target.stop() };
}

/** Run a libiscsi command-line tool; resolves with its exit code and output. */
export function runTool(
  cmd: string,
  args: string[],
  timeoutMs = 30000,
): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
      resolve({ code, out: `${stdout}${stderr}` });
    });
  });
}

export function read10(lba: number, blocks: number): Buffer {
  const c = Buffer.alloc(10);
  c[0] = 0x28;
  c.writeUInt32BE(lba, 2);
  c.writeUInt16BE(blocks, 7);
  return c;
}

export function write10(lba: number, blocks: number): Buffer {
  const c = Buffer.alloc(10);
  c[0] = 0x2a;
  c.writeUInt32BE(lba, 2);
  c.writeUInt16BE(blocks, 7);
  return c;
}

export function inquiry(alloc = 36): Buffer {
  const c = Buffer.alloc(6);
  c[0] = 0x12;
  c.writeUInt16BE(alloc, 3);
  return c;
}

export function pattern(len: number, seed: number): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

/** Poll until `cond` holds; fails after `ms`. */
export async function waitFor(cond: () => boolean, ms = 5000): Promise<void> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) throw new Error("condition not reached in time");
    await new Promise((r) => setTimeout(r, 10));
  }
}
