/**
 * Config text shared by the end-to-end tests: the reference deployment's iscsi.drbd_conf.in moved to 127.0.0.1 and a temp
 * dir, and a one-LUN target on two portals of one portal group (so iscsi-test-cu's MultipathIO runs).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const SEED_FIXTURE = fileURLToPath(
  new URL("../../../test/e2e/fixtures/iscsi.drbd_conf.in", import.meta.url),
);

/** Edits a config text; every pattern must match, so a changed fixture fails loudly instead of silently. */
export class ConfigEditor {
  constructor(public text: string) {}

  replace(from: RegExp, to: string): this {
    assert.match(this.text, from, `seed fixture no longer contains ${from}`);
    this.text = this.text.replace(from, to);
    return this;
  }
}

/**
 * The whole seed with its device sections: portal and netmask on 127.0.0.1, AIO and TCMUR files in `dir`
 * (TCMUR devices 64 MiB), no CHAP. BIO lines and LUN4/LUN5 stay as written.
 */
export function localSeedWithDevices(seed: string, port: number, dir: string): ConfigEditor {
  return new ConfigEditor(seed)
    .replace(/Portal DA1 192\.168\.1\.23:3260/, `Portal DA1 127.0.0.1:${port}`)
    .replace(/Netmask 192\.168\.1\.0\/24/, "Netmask 127.0.0.1/32")
    .replace(/AIO \/tmp\/myfile AIO0 4096/, `AIO ${join(dir, "myfile")} AIO0 4096 16`)
    .replace(/ {2}AuthFile \S+\n/, "")
    .replace(/ {2}AuthGroup AuthGroup1\n/, "")
    .replace(/^ {2}TCMUR (\d) (\S+) +\/file\/\/tmp\/(\S+)$/gm, `  TCMUR $1 $2 /file/${dir}/$3 size=64M`);
}

/** PortalGroup1 with two portals, InitiatorGroup1 for 127.0.0.1, and TargetNode1 exporting `bdev` as LUN0. */
export function twoPortalTarget(iqn: string, ports: readonly number[], bdev: string): string {
  return `[PortalGroup1]
  Portal A 127.0.0.1:${ports[0]}
  Portal B 127.0.0.1:${ports[1]}
[InitiatorGroup1]
  InitiatorName ANY
  Netmask 127.0.0.1/32
[TargetNode1]
  TargetName ${iqn}
  Mapping PortalGroup1 InitiatorGroup1
  AuthMethod None
  QueueDepth 64
  LUN0 ${bdev}
`;
}
