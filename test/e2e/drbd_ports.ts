/** Fixed port ranges of the DRBD end-to-end tests (the task's ranges, not the harness's). */
import { createServer } from "node:net";

/** Free TCP ports on `host` in [first, last], probed by binding. */
export async function freePorts(
  count: number,
  first: number,
  last: number,
  host = "127.0.0.1",
): Promise<number[]> {
  const out: number[] = [];
  for (let p = first; p <= last && out.length < count; p++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = createServer();
      s.once("error", () => resolve(false));
      s.listen(p, host, () => s.close(() => resolve(true)));
    });
    if (ok) out.push(p);
  }
  if (out.length < count) throw new Error(`fewer than ${count} free ports in ${first}-${last}`);
  return out;
}
