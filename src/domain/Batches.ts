/** Splits items into batches of at most `maxItems` items and (unless one item alone is bigger) `maxBytes`. */
export const batches = <A>(items: ReadonlyArray<A>, size: (a: A) => number, maxItems: number, maxBytes: number) => {
  const out: Array<Array<A>> = []
  let current: Array<A> = []
  let bytes = 0
  for (const item of items) {
    const n = size(item)
    if (current.length > 0 && (current.length >= maxItems || bytes + n > maxBytes)) {
      out.push(current)
      current = []
      bytes = 0
    }
    current.push(item)
    bytes += n
  }
  if (current.length > 0) out.push(current)
  return out
}
