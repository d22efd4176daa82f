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

  /**
   * Gives a buffer back; whoever gives it uses no view of it any more. When
   * `keep` are kept already, it takes the place of the smallest one if it is
   * larger: a buffer smaller than the requests of the moment would never be
   * taken again, and would keep the ones that fit out (a chunk reader's
   * replies, whose size follows the span and the repository's largest chunk).
   */
  give(buffer: T): void {
    if (this.free.includes(buffer) || !this.accepts(buffer)) return
    if (this.free.length < this.keep) {
      this.free.push(buffer)
      return
    }
    let smallest = 0
    for (let i = 1; i < this.free.length; i++) if (this.free[i]!.byteLength < this.free[smallest]!.byteLength) smallest = i
    if (this.free.length > 0 && this.free[smallest]!.byteLength < buffer.byteLength) this.free[smallest] = buffer
  }

  /** Lets every kept buffer go. */
  clear(): void {
    this.free.length = 0
  }
}
