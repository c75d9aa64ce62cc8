/**
 * tcmu-runner's rbd cfgstring: `/rbd/<pool>[/<namespace>]/<image>[;osd_op_timeout=<s>][;conf=<path>][;id=<user>]`
 * (handler_rbd.c). Here `path` is what follows `/rbd/`.
 */

export interface RbdTarget {
  readonly pool: string;
  readonly namespace?: string;
  readonly image: string;
  /** librados' rados_osd_op_timeout (and mon op / mount timeouts) in seconds. */
  readonly osdOpTimeout?: number;
  /** ceph.conf to read; librados' default search (/etc/ceph/ceph.conf, $CEPH_CONF) when absent. */
  readonly conf?: string;
  /** The cephx user without "client.", e.g. "admin" or "iscsi". */
  readonly id?: string;
}

const NAME = /^[A-Za-z0-9_.+-][A-Za-z0-9_.+@-]*$/;

export function parseRbdPath(path: string, where: string): RbdTarget {
  const [spec, ...options] = path.split(";");
  const parts = spec.split("/");
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => !NAME.test(p))) {
    throw new Error(
      `${where}: expected /rbd/<pool>[/<namespace>]/<image>[;option=value...], got "/rbd/${path}"`,
    );
  }
  const pool = parts[0];
  const image = parts[parts.length - 1];
  const namespace = parts.length === 3 ? parts[1] : undefined;
  let osdOpTimeout: number | undefined;
  let conf: string | undefined;
  let id: string | undefined;
  for (const opt of options) {
    const eq = opt.indexOf("=");
    const key = eq < 0 ? opt : opt.slice(0, eq);
    const value = eq < 0 ? "" : opt.slice(eq + 1);
    switch (key) {
      case "osd_op_timeout":
        if (!/^\d+$/.test(value) || Number(value) < 1 || Number(value) > 86400) {
          throw new Error(`${where}: osd_op_timeout=${value} must be whole seconds from 1 to 86400`);
        }
        osdOpTimeout = Number(value);
        break;
      case "conf":
        if (!value.startsWith("/")) throw new Error(`${where}: conf=${value} must be an absolute path`);
        conf = value;
        break;
      case "id":
        if (!NAME.test(value) || value.startsWith("client.")) {
          throw new Error(`${where}: id=${value} must be a cephx user name without "client."`);
        }
        id = value;
        break;
      default:
        throw new Error(`${where}: unknown rbd option "${key}" (osd_op_timeout, conf and id are known)`);
    }
  }
  return { pool, namespace, image, osdOpTimeout, conf, id };
}
