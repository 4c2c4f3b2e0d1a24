import { assert, describe, it } from "@effect/vitest"
import { FastCheck } from "effect"
import { renderMarkdown, resolveRelative } from "../../src/web/markdown.js"

const options = {
  linkTo: (path: string) => `#/p/alice/greetings/1.0.0/f/${path.split("/").map(encodeURIComponent).join("/")}`,
  imageFrom: (path: string) => `/api/v1/packages/alice/greetings/1.0.0/files/${path.split("/").map(encodeURIComponent).join("/")}`
}
const render = (md: string) => renderMarkdown(md, options)

const ALLOWED_TAGS = new Set([
  "p", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "code", "blockquote", "ul", "ol", "li", "hr", "table", "thead",
  "tbody", "tr", "th", "td", "em", "strong", "del", "a", "img", "br"
])

/**
 * Checks the renderer's promise on any output: only allowed tags, only allowed attributes, every attribute value
 * quoted and free of quotes, every href/src a safe URL, and no `<` that is not one of our tags.
 */
const assertSafe = (html: string) => {
  const tag = /<(\/?)([a-z0-9]+)((?:\s[a-z-]+="[^"<>]*")*)>/g
  const stripped = html.replace(tag, (whole, _close: string, name: string, attrs: string) => {
    assert.isTrue(ALLOWED_TAGS.has(name), `tag <${name}> in ${html}`)
    for (const [, attr, value] of attrs.matchAll(/\s([a-z-]+)="([^"]*)"/g)) {
      assert.include(["href", "src", "alt", "class", "rel"], attr, `attribute ${attr} in ${whole}`)
      if (attr === "href") assert.match(value ?? "", /^(https?:|mailto:|#\/p\/)/i, `href ${value}`)
      if (attr === "src") assert.match(value ?? "", /^\/api\/v1\/packages\//, `src ${value}`)
      if (attr === "class") assert.match(value ?? "", /^language-[A-Za-z0-9+-]+$/)
    }
    return ""
  })
  assert.notInclude(stripped, "<", `a raw < survived in ${html}`)
  assert.notInclude(stripped, ">", `a raw > survived in ${html}`)
}

describe("markdown renderer", () => {
  it("renders the common README subset", () => {
    const html = render([
      "# Title", "", "Some *em*, **strong**, `code`, ~~gone~~ and [a link](https://example.com/x?a=1&b=2).", "",
      "- one", "- two", "", "1. first", "2. second", "", "> quoted", "", "```js", "const a = 1 < 2", "```", "",
      "| a | b |", "|---|---|", "| 1 | 2 |", "", "---", "", "![logo](img/logo.png)", "[guide](docs/guide.md)"
    ].join("\n"))
    assert.include(html, "<h1>Title</h1>")
    assert.include(html, "<em>em</em>")
    assert.include(html, "<strong>strong</strong>")
    assert.include(html, "<code>code</code>")
    assert.include(html, "<del>gone</del>")
    assert.include(html, `<a href="https://example.com/x?a=1&amp;b=2" rel="nofollow noopener noreferrer">a link</a>`)
    assert.include(html, "<ul><li>one</li><li>two</li></ul>")
    assert.include(html, "<ol><li>first</li><li>second</li></ol>")
    assert.include(html, "<blockquote><p>quoted</p></blockquote>")
    assert.include(html, `<pre><code class="language-js">const a = 1 &lt; 2</code></pre>`)
    assert.include(html, "<table><thead><tr><th>a</th><th>b</th></tr></thead><tbody><tr><td>1</td><td>2</td></tr></tbody></table>")
    assert.include(html, "<hr>")
    assert.include(html, `<img src="/api/v1/packages/alice/greetings/1.0.0/files/img/logo.png" alt="logo">`)
    assert.include(html, `<a href="#/p/alice/greetings/1.0.0/f/docs/guide.md">guide</a>`)
    assertSafe(html)
  })

  const attacks: ReadonlyArray<readonly [string, string]> = [
    ["script tag", "<script>alert(1)</script>"],
    ["img onerror", "<img src=x onerror=alert(1)>"],
    ["svg onload", "<svg/onload=alert(1)>"],
    ["javascript link", "[x](javascript:alert(1))"],
    ["mixed-case scheme", "[x](JaVaScRiPt:alert(1))"],
    ["scheme with a tab", "[x](java\tscript:alert(1))"],
    ["entity-encoded scheme", "[x](&#106;avascript:alert(1))"],
    ["data URL", "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)"],
    ["vbscript", "[x](vbscript:msgbox(1))"],
    ["javascript image", "![x](javascript:alert(1))"],
    ["attribute break-out", "[x](https://a.example/\"onmouseover=\"alert(1))"],
    ["title break-out", "[x](https://a.example \"t\" onmouseover=\"alert(1)\")"],
    ["autolink javascript", "<javascript:alert(1)>"],
    ["code span closing tags", "`</code><script>alert(1)</script>`"],
    ["fence closing tags", "```\n</code></pre><script>alert(1)</script>\n```"],
    ["fence language injection", "```js\" onclick=\"alert(1)\nx\n```"],
    ["heading html", "# <iframe src=//evil>"],
    ["alt break-out", "![a\" onerror=\"alert(1)](x.png)"],
    ["table cell html", "| <b onclick=x>a</b> | b |\n|---|---|\n| <script> | x |"],
    ["protocol-relative", "[x](//evil.example/x)"],
    ["nested emphasis in link", "[**<script>**](https://ok.example)"],
    ["placeholder forgery", "\u0001 0 \u0002 [a](https://x.example) \u00010\u0002"]
  ]
  for (const [label, source] of attacks) {
    it(`neutralizes ${label}`, () => {
      const html = render(source)
      assertSafe(html)
      // Text that merely mentions these is fine (it is escaped); inside a tag it is not.
      // Inside a tag, outside attribute values (assertSafe checked those), nothing may look like a handler.
      assert.notMatch(html.replace(/="[^"]*"/g, "=\"\""), /<[^>]*\son[a-z]+=/i)
      assert.notMatch(html, /(href|src)="(javascript|vbscript|data):/i)
      assert.notInclude(html, "<script")
    })
  }

  it("keeps relative links inside the release", () => {
    assert.strictEqual(resolveRelative("", "a/./b/../c.md"), "a/c.md")
    assert.isUndefined(resolveRelative("", "../etc/passwd"))
    assert.isUndefined(resolveRelative("docs", "../../x"))
    assert.strictEqual(resolveRelative("docs", "../x"), "x")
    const html = render("[up](../../../etc/passwd) [abs](/etc/passwd) [frag](#x)")
    assert.notInclude(html, "<a ")
    assert.include(html, "up abs frag")
  })

  it.prop("any input gives only allowed markup", [FastCheck.string({ unit: "binary", maxLength: 400 })], ([source]) => {
    assertSafe(render(source))
  }, { fastCheck: { numRuns: 300 } })

  it.prop("markdown-ish input gives only allowed markup", [
    FastCheck.array(FastCheck.constantFrom(
      "<", ">", "\"", "'", "&", "[", "]", "(", ")", "!", "*", "_", "`", "~", "#", "-", "|", "\n", " ", "\t",
      "javascript:", "https://x.example", "a", "onerror=", "```", "> ", "1. ", "&#106;", "\\"
    ), { maxLength: 80 }).map((parts) => parts.join(""))
  ], ([source]) => {
    assertSafe(render(source))
  }, { fastCheck: { numRuns: 500 } })

  it("stays linear on pathological input", () => {
    const start = performance.now()
    for (const ch of ["*", "_", "`", "[", "![", "&lt;", "- ", "| ", "> ", "~"]) {
      render(ch.repeat(50_000))
      render(`${ch}a `.repeat(20_000))
    }
    assert.isBelow(performance.now() - start, 5_000)
  })

  it("cuts input beyond maxChars", () => {
    const html = renderMarkdown("a".repeat(100), { ...options, maxChars: 10 })
    assert.include(html, "aaaaaaaaaa</p>")
    assert.include(html, "README cut at 10 characters")
  })
})
