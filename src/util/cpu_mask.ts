/**
 * SPDK's CPU mask notation (`ReactorMask`, `spdk_tgt -m`, a portal's `@cpumask`): a hexadecimal
 * bit mask with or without `0x` (`0x3`: CPUs 0 and 1), or a bracketed list of CPUs and ranges
 * (`[0,2-3]`), as SPDK's spdk_cpuset_parse reads them.
 */

/** The CPUs a mask names, ascending; throws a message naming the mask when it is not one. */
export function parseCpuMask(text: string): number[] {
  const t = text.trim();
  const cpus = new Set<number>();
  if (t.startsWith("[")) {
    if (!t.endsWith("]")) throw new Error(`CPU mask "${text}": a list must end with "]"`);
    const body = t.slice(1, -1).trim();
    if (body === "") throw new Error(`CPU mask "${text}" names no CPU`);
    for (const part of body.split(",")) {
      const m = /^\s*([0-9]+)\s*(?:-\s*([0-9]+)\s*)?$/.exec(part);
      if (!m) throw new Error(`CPU mask "${text}": "${part.trim()}" is not a CPU number or range`);
      const from = Number(m[1]);
      const to = m[2] === undefined ? from : Number(m[2]);
      if (to < from) throw new Error(`CPU mask "${text}": range ${from}-${to} runs backwards`);
      if (to >= MAX_CPUS) throw new Error(`CPU mask "${text}": CPU ${to} is beyond ${MAX_CPUS - 1}`);
      for (let c = from; c <= to; c++) cpus.add(c);
    }
  } else {
    const hex = t.replace(/^0[xX]/, "");
    if (!/^[0-9a-fA-F]+$/.test(hex)) {
      throw new Error(`CPU mask "${text}" is neither a hexadecimal mask (0x3) nor a list ([0,2-3])`);
    }
    // From the lowest digit up: digit i holds CPUs 4i..4i+3.
    for (let i = 0; i < hex.length; i++) {
      const nibble = parseInt(hex[hex.length - 1 - i]!, 16);
      for (let b = 0; b < 4; b++) {
        if (nibble & (1 << b)) {
          const cpu = i * 4 + b;
          if (cpu >= MAX_CPUS) throw new Error(`CPU mask "${text}": CPU ${cpu} is beyond ${MAX_CPUS - 1}`);
          cpus.add(cpu);
        }
      }
    }
    if (cpus.size === 0) throw new Error(`CPU mask "${text}" names no CPU`);
  }
  return [...cpus].sort((a, b) => a - b);
}

/** glibc's CPU_SETSIZE: the largest set sched_setaffinity takes through cpu_set_t. */
const MAX_CPUS = 1024;

/** `0-3,6` for [0,1,2,3,6]: how taskset -c and /sys list CPUs. */
export function formatCpuList(cpus: readonly number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < cpus.length;) {
    let j = i;
    while (j + 1 < cpus.length && cpus[j + 1] === cpus[j]! + 1) j++;
    parts.push(i === j ? `${cpus[i]}` : `${cpus[i]}-${cpus[j]}`);
    i = j + 1;
  }
  return parts.join(",");
}
