/**
 * The config `usertgt serve` runs without -c: one 128 MiB RAM disk with 4096-byte blocks, exported as
 * iqn.2016-06.io.spdk:disk1 LUN 0 on 127.0.0.1:3260 to any initiator, without CHAP. Loopback only, so
 * a fresh `npm start` exposes nothing to the network.
 */
import { parseSpdkConfig, type SpdkConfig } from "./spdk_config.js";

export const DEFAULT_CONFIG_LABEL = "<default config>";

export const DEFAULT_CONFIG_TEXT = `# usertgt embedded default config (SPDK legacy INI format, see docs/config.md)
[iSCSI]
  NodeBase "iqn.2016-06.io.spdk"

[Malloc]
  NumberOfLuns 1
  LunSizeInMB 128
  BlockSize 4096

[PortalGroup1]
  Portal DA1 127.0.0.1:3260

[InitiatorGroup1]
  InitiatorName ANY
  Netmask 127.0.0.1/8

[TargetNode1]
  TargetName disk1
  TargetAlias "Data Disk1"
  Mapping PortalGroup1 InitiatorGroup1
  AuthMethod None
  UseDigest Auto
  LUN0 Malloc0
`;

export function defaultConfig(): SpdkConfig {
  return parseSpdkConfig(DEFAULT_CONFIG_TEXT, DEFAULT_CONFIG_LABEL);
}
