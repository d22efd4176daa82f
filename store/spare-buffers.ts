// Buffers kept for reuse: pack buffers (open-pack.ts), the chunk readers'
// reply buffers and restore's segment buffers. A buffer of MiB allocated
// anew each time costs its page faults (on this project's VM ~20 us per new
// page, 5 ms per MiB) and leaves a dead buffer for the collector; one given
// back and taken again costs neither. Each user decides which buffers are
// worth keeping (of its usual size) and how many.

export class SpareBuffers<T extends { readonly byteLength: number } = ArrayBuffer> {
  private readonly free: T[] = []

  /**
   * @param keep buffers kept at most
   * @param accepts which buffers given back are kept (the others are left to the collector); default all
   */
  constructor(
    private readonly keep: number,
    private readonly accepts: (buffer: T) => boolean = () => true,
  ) {}

  /** A kept buffer of at least `bytes` bytes, no longer kept; undefined if none. */
  take(bytes = 0): T | undefined {
    const i = this.free.findIndex((b) => b.byteLength >= bytes)
    return i < 0 ? undefined : this.free.splice(i, 1)[0]
  }

  /** Gives a buffer back; whoever gives it uses no view of it any more. */
  give(buffer: T): void {
    if (this.free.length < this.keep && !this.free.includes(buffer) && this.accepts(buffer)) this.free.push(buffer)
  }

  /** Lets every kept buffer go. */
  clear(): void {
    this.free.length = 0
  }
}
