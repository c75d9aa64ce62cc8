import type { BlockDevice } from "./bdev.js";

/** The set of named block devices, as SPDK's bdev list: modules register, consumers look up by name. */
export class BdevRegistry {
  private readonly devices = new Map<string, BlockDevice>();

  register(dev: BlockDevice): void {
    if (this.devices.has(dev.name)) {
      throw new Error(`block device "${dev.name}" is already registered`);
    }
    this.devices.set(dev.name, dev);
  }

  /** Forget a device (deleted through the control plane); the caller closes it. */
  unregister(name: string): boolean {
    return this.devices.delete(name);
  }

  get(name: string): BlockDevice | undefined {
    return this.devices.get(name);
  }

  list(): BlockDevice[] {
    return [...this.devices.values()];
  }

  /** Close every device, in reverse registration order (stacked devices before their lower ones). */
  async closeAll(): Promise<void> {
    const all = [...this.devices.values()].reverse();
    this.devices.clear();
    for (const dev of all) await dev.close();
  }
}
