/**
 * The bdev write methods, with SPDK's names, parameters and errors (module/bdev/malloc/
 * bdev_malloc_rpc.c, module/bdev/aio/bdev_aio_rpc.c), and usertgt's own modules in the same style:
 * bdev_tcmur_create/delete and bdev_bio_create/delete, offered only when the server has them.
 */
import { performance } from "node:perf_hooks";
import { TICK_RATE, type AccountedBdev, type OpStat } from "../../bdev/accounted_bdev.js";
import { Errno } from "../graph_control.js";
import { RPC_ORIGIN, type MallocRpcSpec } from "../live_config.js";
import { RpcError, type JsonObject } from "../../rpc/jsonrpc.js";
import { strings } from "./params.js";
import type { ControlServer, MethodTable } from "./control_server.js";

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function einval(method: string, message: string): RpcError {
  return new RpcError(Errno.EINVAL, `${method}: ${message}`);
}

function blockSize(method: string, v: number): number {
  if (v < 512 || v > 65536 || v & (v - 1))
    throw einval(method, `block_size must be a power of two from 512 to 65536, got ${v}`);
  return v;
}

/** Parameters SPDK takes that ask for what we do not have; their defaults are accepted. */
function refuseUnsupported(method: string, p: JsonObject, defaults: Record<string, unknown>): void {
  for (const [key, def] of Object.entries(defaults)) {
    if (p[key] !== undefined && p[key] !== def && !(Array.isArray(def) && def.includes(p[key])))
      throw einval(method, `${key} ${JSON.stringify(p[key])} is not supported (only ${JSON.stringify(def)})`);
  }
}

function latency(prefix: string, s: OpStat): JsonObject {
  return {
    [`${prefix}_latency_ticks`]: s.latencyTicks,
    [`max_${prefix}_latency_ticks`]: s.maxLatencyTicks,
    [`min_${prefix}_latency_ticks`]: s.minLatencyTicks,
  };
}

/** One bdev's counters in SPDK's bdev_get_iostat shape (lib/bdev/bdev_rpc.c bdev_get_iostat_dump). */
function iostatJson(dev: AccountedBdev): JsonObject {
  return {
    name: dev.name,
    bytes_read: dev.read.bytes,
    num_read_ops: dev.read.ops,
    bytes_written: dev.write.bytes,
    num_write_ops: dev.write.ops,
    bytes_unmapped: dev.unmapStat.bytes,
    num_unmap_ops: dev.unmapStat.ops,
    bytes_copied: 0,
    num_copy_ops: 0,
    ...latency("read", dev.read),
    ...latency("write", dev.write),
    ...latency("unmap", dev.unmapStat),
    copy_latency_ticks: 0,
    max_copy_latency_ticks: 0,
    min_copy_latency_ticks: 0,
    io_error: dev.ioErrors,
  };
}

/** SPDK_BDEV_QOS_MIN_IOS_PER_SEC: IOPS limits are whole thousands. */
const QOS_IOPS_UNIT = 1000;

export function registerBdevControl(registry: MethodTable, server: ControlServer): void {
  const { graph } = server;
  const modules = server.bdevModules();
  let nextMalloc = 0;

  const RESET_MODES = ["all", "maxmin", "error", "none"];
  const accountedOf = (m: string, names: readonly string[] | undefined): AccountedBdev[] =>
    (names ?? server.live.bdevs.map((b) => b.name)).map((n) => {
      const dev = graph.accountedBdev(n);
      if (!dev) throw new RpcError(Errno.ENODEV, `${m}: No such device: no bdev "${n}" (name)`);
      return dev;
    });
  registry.register("bdev_get_iostat", {
    description: "I/O counters and latencies (in ticks of tick_rate per second) per bdev",
    params: {
      name: { type: "string" },
      names: { type: "array" },
      per_channel: { type: "boolean" },
      reset_mode: { type: "string" },
    },
    handler: (p) => {
      const m = "bdev_get_iostat";
      if (p.per_channel === true)
        throw einval(m, "per_channel: this server has one channel per bdev; ask without it");
      const mode = (p.reset_mode as string | undefined) ?? "none";
      if (!RESET_MODES.includes(mode))
        throw einval(m, `reset_mode "${mode}" is not one of ${RESET_MODES.join(", ")}`);
      const names =
        p.name !== undefined
          ? [p.name as string]
          : p.names !== undefined
            ? strings(m, p.names, "names")
            : undefined;
      const devs = accountedOf(m, names);
      const out = {
        tick_rate: TICK_RATE,
        ticks: Math.round(performance.now() * 1e6),
        bdevs: devs.map(iostatJson),
      };
      if (mode !== "none") for (const d of devs) d.resetStats(mode as "all" | "maxmin" | "error");
      return out;
    },
  });
  registry.register("bdev_reset_iostat", {
    description: "reset I/O statistics (mode all or maxmin) of one bdev or all",
    params: { name: { type: "string" }, mode: { type: "string" } },
    handler: (p) => {
      const m = "bdev_reset_iostat";
      const mode = (p.mode as string | undefined) ?? "all";
      if (mode !== "all" && mode !== "maxmin") throw einval(m, `mode "${mode}" is not all or maxmin`);
      for (const d of accountedOf(m, p.name !== undefined ? [p.name as string] : undefined))
        d.resetStats(mode);
      return true;
    },
  });
  registry.register("bdev_set_qos_limit", {
    description: "limit a bdev's IOPS and MB/s (0: no limit; IOPS in whole thousands)",
    params: {
      name: { type: "string", required: true },
      rw_ios_per_sec: { type: "integer" },
      rw_mbytes_per_sec: { type: "integer" },
      r_mbytes_per_sec: { type: "integer" },
      w_mbytes_per_sec: { type: "integer" },
    },
    handler: (p) => {
      const m = "bdev_set_qos_limit";
      const keys = ["rw_ios_per_sec", "rw_mbytes_per_sec", "r_mbytes_per_sec", "w_mbytes_per_sec"] as const;
      if (!keys.some((k) => p[k] !== undefined)) throw einval(m, `give at least one of ${keys.join(", ")}`);
      for (const k of keys)
        if (p[k] !== undefined && (p[k] as number) < 0) throw einval(m, `${k} must not be negative`);
      const iops = p.rw_ios_per_sec as number | undefined;
      if (iops !== undefined && iops % QOS_IOPS_UNIT !== 0)
        throw einval(m, `rw_ios_per_sec ${iops} is not a multiple of ${QOS_IOPS_UNIT}`);
      const dev = graph.accountedBdev(p.name as string);
      if (!dev)
        throw new RpcError(Errno.ENODEV, `${m}: No such device: no bdev "${p.name as string}" (name)`);
      // Limits not given keep their value (SPDK).
      const old = dev.qosLimits;
      graph.setQos(p.name as string, {
        rwIosPerSec: iops ?? old.rwIosPerSec,
        rwMbytesPerSec: (p.rw_mbytes_per_sec as number | undefined) ?? old.rwMbytesPerSec,
        rMbytesPerSec: (p.r_mbytes_per_sec as number | undefined) ?? old.rMbytesPerSec,
        wMbytesPerSec: (p.w_mbytes_per_sec as number | undefined) ?? old.wMbytesPerSec,
      });
      return true;
    },
  });

  registry.register("bdev_malloc_create", {
    description: "create a RAM disk; returns its name",
    params: {
      name: { type: "string" },
      num_blocks: { type: "integer", required: true },
      block_size: { type: "integer", required: true },
      uuid: { type: "string" },
      physical_block_size: { type: "integer" },
      optimal_io_boundary: { type: "integer" },
      md_size: { type: "integer" },
      md_interleave: { type: "boolean" },
      dif_type: { type: "integer" },
      dif_is_head_of_md: { type: "boolean" },
      dif_pi_format: { type: "integer" },
      numa_id: { type: "integer" },
    },
    handler: async (p) => {
      const m = "bdev_malloc_create";
      const bs = blockSize(m, p.block_size as number);
      if ((p.num_blocks as number) < 1)
        throw einval(m, `num_blocks must be at least 1, got ${p.num_blocks as number}`);
      refuseUnsupported(m, p, {
        md_size: 0,
        md_interleave: false,
        dif_type: 0,
        dif_is_head_of_md: false,
        dif_pi_format: 0,
        optimal_io_boundary: 0,
        numa_id: -1,
      });
      if (p.physical_block_size !== undefined && p.physical_block_size !== 0 && p.physical_block_size !== bs)
        throw einval(m, `physical_block_size must equal block_size (${bs})`);
      if (p.uuid !== undefined && !UUID_RE.test(p.uuid as string))
        throw einval(m, `uuid "${p.uuid as string}" is not a UUID`);
      let name = p.name as string | undefined;
      if (name === undefined) {
        // SPDK's default names: Malloc0, Malloc1, ... (the first free one).
        while (server.registry.get(`Malloc${nextMalloc}`)) nextMalloc++;
        name = `Malloc${nextMalloc}`;
      }
      if (name === "") throw einval(m, "name must not be empty");
      const spec: MallocRpcSpec = {
        kind: "malloc",
        name,
        blockSize: bs,
        blockCount: p.num_blocks as number,
        ...(p.uuid !== undefined ? { uuid: (p.uuid as string).toLowerCase() } : {}),
        ...RPC_ORIGIN,
      };
      await graph.createBdev(spec);
      return name;
    },
  });
  registry.register("bdev_malloc_delete", {
    description: "delete a RAM disk (its LUNs are hot-removed)",
    params: { name: { type: "string", required: true } },
    handler: async (p) => {
      await graph.deleteBdev(p.name as string, "malloc");
      return true;
    },
  });

  registry.register("bdev_aio_create", {
    description: "create a block device on a file; returns its name",
    params: {
      filename: { type: "string", required: true },
      name: { type: "string", required: true },
      block_size: { type: "integer" },
      readonly: { type: "boolean" },
      fallocate: { type: "boolean" },
      uuid: { type: "string" },
      nowait: { type: "boolean" },
    },
    handler: async (p) => {
      const m = "bdev_aio_create";
      refuseUnsupported(m, p, { readonly: false, nowait: false, uuid: undefined });
      if (p.name === "") throw einval(m, "name must not be empty");
      if (p.filename === "") throw einval(m, "filename must not be empty");
      // SPDK detects the device's block size when none is given (AioBdev does); a file has none: 512.
      const fromDevice = p.block_size === undefined || p.block_size === 0;
      const bs = fromDevice ? 512 : blockSize(m, p.block_size as number);
      await graph.createBdev({
        kind: "aio",
        name: p.name as string,
        path: p.filename as string,
        blockSize: bs,
        ...(fromDevice ? { blockSizeFromDevice: true } : {}),
        ...RPC_ORIGIN,
      });
      return p.name as string;
    },
  });
  registry.register("bdev_aio_delete", {
    description: "delete a file-backed block device (its LUNs are hot-removed)",
    params: { name: { type: "string", required: true } },
    handler: async (p) => {
      await graph.deleteBdev(p.name as string, "aio");
      return true;
    },
  });
  registry.register("bdev_aio_rescan", {
    description: "take the file's new size (initiators get CAPACITY DATA HAS CHANGED)",
    params: { name: { type: "string", required: true } },
    handler: async (p) => {
      await graph.rescanAio(p.name as string);
      return true;
    },
  });

  if (modules.tcmur) {
    registry.register("bdev_tcmur_create", {
      description: "create a tcmu-runner style device in the device tree ([TCMUR] line)",
      params: {
        name: { type: "string", required: true },
        minor: { type: "integer", required: true },
        cfgstring: { type: "string", required: true },
        options: { type: "array" },
      },
      handler: async (p) => {
        const m = "bdev_tcmur_create";
        const minor = p.minor as number;
        if (minor < 0 || minor > 255) throw einval(m, `minor must be 0..255, got ${minor}`);
        const used = server.live.bdevs.find((b) => b.kind === "tcmur" && b.minor === minor);
        if (used) throw new RpcError(Errno.EEXIST, `${m}: minor ${minor} is used by ${used.name}`);
        const cfg = /^\/([A-Za-z0-9_]+)\//.exec(p.cfgstring as string);
        if (!cfg)
          throw einval(m, `cfgstring expects /<handler>/<handler config>, got "${p.cfgstring as string}"`);
        await graph.createBdev({
          kind: "tcmur",
          name: p.name as string,
          minor,
          cfgString: p.cfgstring as string,
          handler: cfg[1]!,
          extra: strings(m, p.options, "options"),
          ...RPC_ORIGIN,
        });
        return p.name as string;
      },
    });
    registry.register("bdev_tcmur_delete", {
      description: "delete a TCMUR device (its LUNs are hot-removed)",
      params: { name: { type: "string", required: true } },
      handler: async (p) => {
        await graph.deleteBdev(p.name as string, "tcmur");
        return true;
      },
    });
  }
  if (modules.bio) {
    registry.register("bdev_bio_create", {
      description: "open a device-tree path as a block device, after an optional helper ([BIO] line)",
      params: {
        name: { type: "string", required: true },
        path: { type: "string", required: true },
        helper: { type: "array" },
      },
      handler: async (p) => {
        await graph.createBdev({
          kind: "bio",
          name: p.name as string,
          path: p.path as string,
          helper: strings("bdev_bio_create", p.helper, "helper"),
          ...RPC_ORIGIN,
        });
        return p.name as string;
      },
    });
    registry.register("bdev_bio_delete", {
      description: "delete a BIO device (its LUNs are hot-removed)",
      params: { name: { type: "string", required: true } },
      handler: async (p) => {
        await graph.deleteBdev(p.name as string, "bio");
        return true;
      },
    });
  }
}
