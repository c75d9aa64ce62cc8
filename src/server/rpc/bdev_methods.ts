/**
 * The bdev write methods, with SPDK's names, parameters and errors (module/bdev/malloc/
 * bdev_malloc_rpc.c, module/bdev/aio/bdev_aio_rpc.c), and usertgt's own modules in the same style:
 * bdev_tcmur_create/delete and bdev_bio_create/delete, offered only when the server has them.
 */
import { Errno } from "../graph_control.js";
import { RPC_ORIGIN, type MallocRpcSpec } from "../live_config.js";
import { RpcError, type JsonObject } from "../../rpc/jsonrpc.js";
import type { MethodRegistry } from "../../rpc/registry.js";
import { strings } from "./params.js";
import type { ControlServer } from "./register.js";

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

export function registerBdevControl(registry: MethodRegistry, server: ControlServer): void {
  const { graph } = server;
  const modules = server.bdevModules();
  let nextMalloc = 0;

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
      // SPDK detects the device's block size when none is given; a file has none: 512.
      const bs =
        p.block_size === undefined || p.block_size === 0 ? 512 : blockSize(m, p.block_size as number);
      await graph.createBdev({
        kind: "aio",
        name: p.name as string,
        path: p.filename as string,
        blockSize: bs,
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
