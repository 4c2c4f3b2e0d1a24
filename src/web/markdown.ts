/**
 * A small, safe Markdown renderer for READMEs shown on the web page.
 *
 * Safety by construction: the whole source is HTML-escaped first (`& < > " '`), and only then is markup added, by
 * rules that emit a fixed set of tags (p, h1–h6, pre, code, blockquote, ul, ol, li, hr, table, em, strong, del, a,
 * img, br). The only attributes are `href`/`src` — whose value is an `http(s):`/`mailto:` URL or a path inside the
 * release, rebuilt by us and escaped — `alt`, `class="language-…"` from `[A-Za-z0-9+-]`, and `rel`. No raw HTML from
 * the package ever reaches the page, whatever it contains.
 *
 * We did not take a Markdown library: a full CommonMark implementation is large, and its safety depends on
 * options (`html: false`) plus a sanitizer (DOMPurify needs a DOM on the server). This subset covers what READMEs
 * use (headings, paragraphs, lists, code, quotes, tables, links, emphasis); the rest shows as plain text.
 *
 * Every rule is linear in its input (no nested quantifiers), and the input is capped (`maxChars`).
 */

export interface MarkdownOptions {
  /** Where a relative link to `path` (normalized, inside the release) points, e.g. the web page's file view. */
  readonly linkTo: (path: string) => string
  /** Where a relative image `path` is loaded from, e.g. the file-content endpoint. */
  readonly imageFrom: (path: string) => string
  /** The directory of the README inside the release ("" for the root). */
  readonly baseDir?: string
  /** Longest source rendered; the rest is cut with a note. Default 512 KiB of characters. */
  readonly maxChars?: number
}

const ESCAPES: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;", "'": "&#39;" }

export const escapeHtml = (text: string): string => text.replace(/[&<>"']/g, (c) => ESCAPES[c] ?? c)

const unescapeHtml = (text: string): string =>
  text.replace(/&(amp|lt|gt|quot|#39);/g, (_, e: string) =>
    e === "amp" ? "&" : e === "lt" ? "<" : e === "gt" ? ">" : e === "quot" ? "\"" : "'")

/**
 * Normalizes a relative path against `baseDir`: resolves `.` and `..`, refuses to leave the release.
 * Returns undefined for anything that is not a plain relative path.
 */
export const resolveRelative = (baseDir: string, path: string): string | undefined => {
  const parts = baseDir === "" ? [] : baseDir.split("/")
  for (const segment of path.split("/")) {
    if (segment === "" || segment === ".") continue
    if (segment === "..") {
      if (parts.length === 0) return undefined
      parts.pop()
    } else {
      parts.push(segment)
    }
  }
  return parts.length === 0 ? undefined : parts.join("/")
}

type Url = { readonly kind: "external"; readonly url: string } | { readonly kind: "relative"; readonly path: string }

/** Reads a link destination (escaped text, as it appears after escaping). Undefined: not linkable. */
const readUrl = (escaped: string, baseDir: string): Url | undefined => {
  // `(url "title")`: drop the title.
  const raw = unescapeHtml(escaped).trim().replace(/\s+"[^"]*"$/, "")
  if (raw.length === 0 || raw.length > 2048 || /[\s\u0000-\u001f\u007f\\]/.test(raw)) return undefined
  const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):/.exec(raw)
  if (scheme !== null) {
    const name = (scheme[1] ?? "").toLowerCase()
    return name === "http" || name === "https" || name === "mailto" ? { kind: "external", url: raw } : undefined
  }
  if (raw.startsWith("/") || raw.startsWith("#") || raw.startsWith("?")) return undefined
  const path = resolveRelative(baseDir, raw.replace(/[?#].*$/, ""))
  return path === undefined ? undefined : { kind: "relative", path }
}

// Placeholders for already-rendered inline HTML; the source can contain neither \u0001 nor \u0002 (stripped).
const hold = (store: Array<string>, html: string) => `\u0001${store.push(html) - 1}\u0002`
const release = (store: ReadonlyArray<string>, text: string): string =>
  text.replace(/\u0001(\d+)\u0002/g, (_, i: string) => store[Number(i)] ?? "")

const emphasis = (text: string): string =>
  text
    .replace(/\*\*([^*\n]+)\*\*/g, "<strong>$1</strong>")
    .replace(/__([^_\n]+)__/g, "<strong>$1</strong>")
    .replace(/~~([^~\n]+)~~/g, "<del>$1</del>")
    .replace(/(^|[^*\w])\*([^*\s][^*\n]*)\*(?![*\w])/g, "$1<em>$2</em>")
    .replace(/(^|[^_\w])_([^_\s][^_\n]*)_(?![_\w])/g, "$1<em>$2</em>")

/** Inline Markdown over escaped text. */
const inline = (escaped: string, options: Required<MarkdownOptions>): string => {
  const store: Array<string> = []
  const link = (label: string, dest: string) => {
    const url = readUrl(dest, options.baseDir)
    if (url === undefined) return hold(store, label)
    const href = url.kind === "external" ? url.url : options.linkTo(url.path)
    const rel = url.kind === "external" ? " rel=\"nofollow noopener noreferrer\"" : ""
    return hold(store, `<a href="${escapeHtml(href)}"${rel}>${label}</a>`)
  }
  let text = escaped
    // Code spans first: nothing inside them is Markdown.
    .replace(/(`+)([^`\n]+?)\1/g, (_, _ticks: string, code: string) => hold(store, `<code>${code}</code>`))
    // Images: relative ones are loaded from the release; external ones become links (the page's CSP loads no
    // third-party images).
    .replace(/!\[([^\]\n]{0,500})\]\(([^()\s\n]{1,2048}(?:\s+&quot;[^\n]{0,200}?&quot;)?)\)/g, (_, alt: string, dest: string) => {
      const url = readUrl(dest, options.baseDir)
      if (url === undefined) return hold(store, alt)
      if (url.kind === "external") return link(alt.length > 0 ? alt : escapeHtml(url.url), dest)
      return hold(store, `<img src="${escapeHtml(options.imageFrom(url.path))}" alt="${alt}">`)
    })
    .replace(/\[([^\]\n]{1,500})\]\(([^()\s\n]{1,2048}(?:\s+&quot;[^\n]{0,200}?&quot;)?)\)/g, (_, label: string, dest: string) =>
      link(release(store, emphasis(label)), dest))
    // Autolinks: <https://…> (escaped as &lt;…&gt;).
    .replace(/&lt;((?:https?|mailto):[^\s&]{1,2048})&gt;/gi, (_, url: string) => link(url, url))
  text = emphasis(text)
  // Hard line breaks: two trailing spaces or a backslash before a newline.
  text = text.replace(/(?: {2,}|\\)\n/g, "<br>\n")
  return release(store, text)
}

interface Line {
  readonly text: string
}

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([A-Za-z0-9+-]{0,40})/
const HR = /^ {0,3}(?:(?:-[ \t]*){3,}|(?:\*[ \t]*){3,}|(?:_[ \t]*){3,})$/
const QUOTE = /^ {0,3}&gt; ?(.*)$/
const BULLET = /^( {0,12})([-*+]|\d{1,9}[.)])[ \t]+(.*)$/
const TABLE_RULE = /^ {0,3}\|?[ \t]*:?-{1,}:?[ \t]*(?:\|[ \t]*:?-{1,}:?[ \t]*)*\|?[ \t]*$/

const heading = (text: string): { level: number; body: string } | undefined => {
  const trimmed = text.replace(/^ {0,3}/, "")
  let level = 0
  while (level < trimmed.length && trimmed[level] === "#") level++
  if (level === 0 || level > 6) return undefined
  const rest = trimmed.slice(level)
  if (rest.length > 0 && rest[0] !== " " && rest[0] !== "\t") return undefined
  return { level, body: rest.trim().replace(/[ \t]+#+$/, "").replace(/^#+$/, "") }
}

const splitRow = (row: string): Array<string> => {
  let r = row.trim()
  if (r.startsWith("|")) r = r.slice(1)
  if (r.endsWith("|")) r = r.slice(0, -1)
  return r.split("|").map((c) => c.trim())
}

const blocks = (lines: ReadonlyArray<Line>, options: Required<MarkdownOptions>, depth: number): string => {
  const out: Array<string> = []
  let i = 0
  const paragraph: Array<string> = []
  const flush = () => {
    if (paragraph.length > 0) out.push(`<p>${inline(paragraph.join("\n"), options)}</p>`)
    paragraph.length = 0
  }
  while (i < lines.length) {
    const text = lines[i]?.text ?? ""
    if (text.trim() === "") {
      flush()
      i++
      continue
    }
    const fence = FENCE.exec(text)
    if (fence !== null) {
      flush()
      const marker = fence[1] ?? "```"
      const language = fence[2] ?? ""
      const code: Array<string> = []
      i++
      while (i < lines.length && !(lines[i]?.text ?? "").trimStart().startsWith(marker)) {
        code.push(lines[i]?.text ?? "")
        i++
      }
      i++ // the closing fence (or the end)
      const cls = language === "" ? "" : ` class="language-${language}"`
      out.push(`<pre><code${cls}>${code.join("\n")}</code></pre>`)
      continue
    }
    if (paragraph.length === 0 && /^( {4}|\t)/.test(text)) {
      const code: Array<string> = []
      while (i < lines.length && (/^( {4}|\t)/.test(lines[i]?.text ?? "") || (lines[i]?.text ?? "").trim() === "")) {
        code.push((lines[i]?.text ?? "").replace(/^( {4}|\t)/, ""))
        i++
      }
      while (code.length > 0 && (code[code.length - 1] ?? "").trim() === "") code.pop()
      out.push(`<pre><code>${code.join("\n")}</code></pre>`)
      continue
    }
    const h = heading(text)
    if (h !== undefined) {
      flush()
      out.push(`<h${h.level}>${inline(h.body, options)}</h${h.level}>`)
      i++
      continue
    }
    if (HR.test(text)) {
      flush()
      out.push("<hr>")
      i++
      continue
    }
    if (QUOTE.test(text)) {
      flush()
      const quoted: Array<Line> = []
      while (i < lines.length) {
        const m = QUOTE.exec(lines[i]?.text ?? "")
        if (m === null) break
        quoted.push({ text: m[1] ?? "" })
        i++
      }
      out.push(depth >= 8
        ? `<blockquote><p>${inline(quoted.map((l) => l.text).join("\n"), options)}</p></blockquote>`
        : `<blockquote>${blocks(quoted, options, depth + 1)}</blockquote>`)
      continue
    }
    const bullet = BULLET.exec(text)
    if (bullet !== null) {
      flush()
      const ordered = /\d/.test(bullet[2] ?? "")
      const items: Array<Array<string>> = []
      while (i < lines.length) {
        const line = lines[i]?.text ?? ""
        const m = BULLET.exec(line)
        if (m !== null && /\d/.test(m[2] ?? "") === ordered) {
          items.push([m[3] ?? ""])
        } else if (line.trim() !== "" && /^\s/.test(line) && items.length > 0) {
          items[items.length - 1]?.push(line.trim()) // continuation of the item
        } else {
          break
        }
        i++
      }
      const tag = ordered ? "ol" : "ul"
      out.push(`<${tag}>${items.map((item) => `<li>${inline(item.join("\n"), options)}</li>`).join("")}</${tag}>`)
      continue
    }
    if (paragraph.length === 0 && text.includes("|") && TABLE_RULE.test(lines[i + 1]?.text ?? "")) {
      const header = splitRow(text)
      const rows: Array<Array<string>> = []
      i += 2
      while (i < lines.length && (lines[i]?.text ?? "").includes("|") && (lines[i]?.text ?? "").trim() !== "") {
        rows.push(splitRow(lines[i]?.text ?? ""))
        i++
      }
      const cells = (row: ReadonlyArray<string>, tag: string) =>
        header.map((_, c) => `<${tag}>${inline(row[c] ?? "", options)}</${tag}>`).join("")
      out.push(
        `<table><thead><tr>${cells(header, "th")}</tr></thead>` +
          `<tbody>${rows.map((r) => `<tr>${cells(r, "td")}</tr>`).join("")}</tbody></table>`
      )
      continue
    }
    paragraph.push(text)
    i++
  }
  flush()
  return out.join("\n")
}

/** Renders Markdown `source` as safe HTML (see the module comment). */
export const renderMarkdown = (source: string, options: MarkdownOptions): string => {
  const opts: Required<MarkdownOptions> = { baseDir: "", maxChars: 512 * 1024, ...options }
  const cut = source.length > opts.maxChars
  const text = escapeHtml((cut ? source.slice(0, opts.maxChars) : source).replace(/[\u0000-\u0002]/g, "").replace(/\r\n?/g, "\n"))
  const html = blocks(text.split("\n").map((t) => ({ text: t })), opts, 0)
  return cut ? `${html}\n<p><em>(README cut at ${opts.maxChars} characters)</em></p>` : html
}
