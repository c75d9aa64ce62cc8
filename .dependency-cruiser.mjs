// Architecture rules checked by `npm run lint` (docs/architecture.md draws the layers).
// Type-only imports count: a cycle through `import type` is still two files that must change together.

/** @type {import('dependency-cruiser').IConfiguration} */
export default {
  forbidden: [
    {
      name: "no-cycle",
      severity: "error",
      comment: "Import cycles make two files one concern; break them with an interface in the lower file.",
      from: { path: "^src/" },
      to: { circular: true },
    },
    {
      name: "bdev-is-the-bottom-layer",
      severity: "error",
      comment:
        "A block device module never imports SCSI, iSCSI or what builds the graph (server, RPC, CLI, config).",
      from: { path: "^src/bdev/" },
      to: { path: "^src/(scsi|iscsi|server|rpc|cli|config)/" },
    },
    {
      name: "io-engine-is-below-bdev",
      severity: "error",
      comment:
        "The I/O engine serves the AIO and TCMUR file backends; it knows no block device or anything above.",
      from: { path: "^src/io_engine/" },
      to: { path: "^src/(bdev|scsi|iscsi|server|rpc|cli|config|tcmur|devtree|drbd)/" },
    },
    {
      name: "scsi-never-reaches-up",
      severity: "error",
      comment: "SCSI sits below iSCSI and is built by the server: it never imports them.",
      from: { path: "^src/scsi/" },
      to: { path: "^src/(iscsi|server|rpc|cli|config)/" },
    },
    {
      name: "subsystems-never-import-what-builds-them",
      severity: "error",
      comment:
        "iSCSI, the device tree, FUSE, tcmu handlers and DRBD get what they need through interfaces; " +
        "config, RPC, the server and the CLI build them from outside.",
      from: { path: "^src/(iscsi|devtree|fuse|tcmur|drbd|util)/" },
      to: { path: "^src/(server|cli|rpc|config)/" },
    },
    {
      name: "product-never-imports-tests",
      severity: "error",
      comment: "Product code must not depend on test files or test support.",
      from: { path: "^src/", pathNot: "(\\.test\\.ts$|^src/drbd/(pair_fixture|test_support)\\.ts$)" },
      to: { path: "(\\.test\\.ts$|^test/|^src/drbd/(pair_fixture|test_support)\\.ts$)" },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
  },
};
