// In-memory backend for tests: a Map from key to bytes. It copies on the way
// in and out so that callers can never alias stored bytes.

import { checkKey, type ByteRange, type ObjectInfo, type ObjectStore, type PutOptions } from "../backend.js"
import { NotFoundError } from "../errors.js"

export class MemoryObjectStore implements ObjectStore {
  readonly location = "memory:"
  private readonly objects = new Map<string, { data: Uint8Array; mtimeMs: number }>()

  /** Nothing here outlives the process: volatile or not, the same. */
  async put(key: string, data: Uint8Array, _opts?: PutOptions): Promise<void> {
    checkKey(key)
    this.objects.set(key, { data: Uint8Array.from(data), mtimeMs: Date.now() })
  }

  async putIfAbsent(key: string, data: Uint8Array): Promise<boolean> {
    checkKey(key)
    if (this.objects.has(key)) return false
    this.objects.set(key, { data: Uint8Array.from(data), mtimeMs: Date.now() })
    return true
  }

  async get(key: string, range?: ByteRange): Promise<Uint8Array> {
    checkKey(key)
    const obj = this.objects.get(key)
    if (!obj) throw new NotFoundError(`object ${key} does not exist in memory`, { key })
    if (!range) return Uint8Array.from(obj.data)
    return Uint8Array.from(obj.data.subarray(range.offset, range.offset + range.length))
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    checkKey(key)
    const obj = this.objects.get(key)
    return obj && { key, size: obj.data.length, mtimeMs: obj.mtimeMs }
  }

  async list(prefix: string): Promise<ObjectInfo[]> {
    return [...this.objects.entries()]
      .filter(([key]) => key.startsWith(prefix))
      .map(([key, obj]) => ({ key, size: obj.data.length, mtimeMs: obj.mtimeMs }))
      .sort((a, b) => (a.key < b.key ? -1 : 1))
  }

  async delete(key: string): Promise<void> {
    checkKey(key)
    this.objects.delete(key)
  }

  async close(): Promise<void> {}

  /** Test hook: replace an object's bytes in place (corruption tests). */
  tamper(key: string, edit: (data: Uint8Array) => Uint8Array): void {
    const obj = this.objects.get(key)
    if (!obj) throw new Error(`no object ${key}`)
    obj.data = edit(obj.data)
  }
}
