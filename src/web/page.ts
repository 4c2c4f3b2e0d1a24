/**
 * The web page: one HTML document, one stylesheet, one vanilla script, no build step. They are TypeScript string
 * modules so `tsc` carries them into dist/ and the server needs no files at runtime.
 *
 * Safety: the script builds the DOM with `textContent` and `createElement` only. The one HTML sink is the README,
 * whose HTML comes from the server's escaping renderer (src/web/markdown.ts) and goes through a Trusted Types
 * policy; the page's CSP (`pageCsp`) allows scripts from this origin only, no inline script, no eval, and
 * requires Trusted Types, so even a bug in the renderer could not run a script.
 */

/** The Content-Security-Policy of the page and its assets. */
export const pageCsp = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
  "require-trusted-types-for 'script'",
  "trusted-types upm-readme"
].join("; ")

export const indexHtml = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>upm packages</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/assets/app.css">
<script src="/assets/app.js" defer></script>
</head>
<body>
<header>
  <a class="brand" href="#/">upm</a>
  <form id="search" role="search" action="/" method="get">
    <input id="q" name="q" type="search" placeholder="Search packages" autocomplete="off" maxlength="256" aria-label="Search packages">
    <button type="submit">Search</button>
  </form>
</header>
<main id="main" aria-live="polite">
  <noscript>This page needs JavaScript. The JSON API is at <a href="/api/v1/packages">/api/v1/packages</a>.</noscript>
</main>
<footer>upm package server &middot; <a href="/openapi.json">OpenAPI</a> &middot; <a href="/metrics">metrics</a></footer>
</body>
</html>
`

export const appCss = `:root { --fg: #1d232a; --muted: #5b6670; --line: #dde2e6; --accent: #0b63c5; --ok: #1a7f37; --bad: #b3261e; --bg2: #f5f7f9; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); }
header { display: flex; gap: 1rem; align-items: center; padding: .6rem 1.2rem; border-bottom: 1px solid var(--line); }
.brand { font-weight: 700; font-size: 1.2rem; color: var(--fg); text-decoration: none; }
#search { display: flex; flex: 1; max-width: 40rem; gap: .4rem; }
#q { flex: 1; padding: .35rem .6rem; font: inherit; border: 1px solid var(--line); border-radius: 4px; }
button, .button { font: inherit; padding: .35rem .8rem; border: 1px solid var(--accent); background: var(--accent); color: #fff; border-radius: 4px; cursor: pointer; text-decoration: none; display: inline-block; }
.button.secondary { background: #fff; color: var(--accent); }
main { max-width: 64rem; margin: 0 auto; padding: 1rem 1.2rem 3rem; }
footer { text-align: center; color: var(--muted); font-size: .85rem; padding: 1rem; border-top: 1px solid var(--line); }
a { color: var(--accent); }
.muted { color: var(--muted); }
.error { color: var(--bad); border: 1px solid var(--bad); padding: .6rem .8rem; border-radius: 4px; white-space: pre-wrap; }
ul.results { list-style: none; padding: 0; }
ul.results li { padding: .6rem 0; border-bottom: 1px solid var(--line); }
ul.results .name { font-weight: 600; font-size: 1.05rem; }
.pager { display: flex; gap: 1rem; align-items: center; margin-top: 1rem; }
.meta { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; margin: 1rem 0; }
.meta dt { color: var(--muted); }
.meta dd { margin: 0; overflow-wrap: anywhere; }
code, pre, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .9em; }
pre { background: var(--bg2); padding: .8rem; overflow: auto; border-radius: 4px; }
.install { display: flex; gap: .4rem; align-items: center; margin: 1rem 0; }
.install code { flex: 1; background: var(--bg2); padding: .45rem .6rem; border-radius: 4px; }
.downloads { display: flex; gap: .5rem; margin: 1rem 0; }
.badge { display: inline-block; padding: 0 .45rem; border-radius: 3px; font-size: .85rem; color: #fff; }
.badge.ok { background: var(--ok); }
.badge.bad { background: var(--bad); }
.versions { display: flex; flex-wrap: wrap; gap: .3rem .8rem; padding: 0; list-style: none; }
.versions .current { font-weight: 700; }
#readme { border: 1px solid var(--line); border-radius: 4px; padding: 0 1.2rem; margin: 1rem 0; overflow-wrap: anywhere; }
#readme img { max-width: 100%; }
#readme table { border-collapse: collapse; }
#readme th, #readme td { border: 1px solid var(--line); padding: .2rem .5rem; }
table.files { border-collapse: collapse; width: 100%; }
table.files td { padding: .2rem .4rem; border-bottom: 1px solid var(--line); }
table.files td.size { text-align: right; color: var(--muted); white-space: nowrap; }
h1 { margin: .4rem 0; overflow-wrap: anywhere; }
h2 { margin-top: 2rem; }
`

// Written without backticks or "${" so it can live in this template literal; String.raw keeps backslashes.
export const appJs = String.raw`"use strict";
(function () {
  var main = document.getElementById("main");
  var policy = window.trustedTypes && window.trustedTypes.createPolicy
    ? window.trustedTypes.createPolicy("upm-readme", { createHTML: function (s) { return s; } })
    : { createHTML: function (s) { return s; } };

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (key) {
        var value = attrs[key];
        if (value === undefined || value === null) return;
        if (key === "text") node.textContent = String(value);
        else if (key === "className") node.className = value;
        else node.setAttribute(key, String(value));
      });
    }
    (children || []).forEach(function (child) {
      if (child === null || child === undefined) return;
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  function enc(segment) { return encodeURIComponent(segment); }
  function pathOf(path) { return path.split("/").map(enc).join("/"); }
  function api(path) { return "/api/v1/packages" + path; }
  function pageLink(name, version) { return "#/p/" + name + (version ? "/" + enc(version) : ""); }

  function getJson(url) {
    return fetch(url, { headers: { accept: "application/json" } }).then(function (res) {
      return res.json().catch(function () { return { message: "HTTP " + res.status }; }).then(function (body) {
        if (!res.ok) {
          var err = new Error(body && typeof body.message === "string" ? body.message : "HTTP " + res.status);
          err.status = res.status;
          throw err;
        }
        return body;
      });
    });
  }

  function showError(target, err) {
    target.appendChild(el("p", { className: "error", role: "alert", text: err && err.message ? err.message : String(err) }));
  }

  function formatSize(n) {
    if (n === null || n === undefined) return "";
    if (n < 1024) return n + " B";
    if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " KiB";
    return (n / 1024 / 1024).toFixed(1) + " MiB";
  }

  function formatDate(iso) { return iso ? iso.replace("T", " ").replace(/\.\d+Z$/, " UTC").replace(/Z$/, " UTC") : "unknown"; }

  // ---- list and search ----------------------------------------------------------------------
  function renderList(query, page) {
    clear(main);
    document.getElementById("q").value = query;
    document.title = query ? "Search: " + query + " - upm" : "upm packages";
    main.appendChild(el("h1", { text: query ? "Packages matching \u201c" + query + "\u201d" : "Packages" }));
    var status = el("p", { className: "muted", text: "Loading\u2026" });
    main.appendChild(status);
    var url = api("?perPage=20&page=" + page + (query ? "&q=" + enc(query) : ""));
    return getJson(url).then(function (body) {
      status.textContent = body.total + (body.total === 1 ? " package" : " packages");
      var list = el("ul", { className: "results", id: "results" });
      body.packages.forEach(function (p) {
        list.appendChild(el("li", null, [
          el("a", { className: "name", href: pageLink(p.name), text: p.name }),
          " ",
          el("span", { className: "muted", text: p.latest }),
          p.description ? el("div", { className: "description", text: p.description }) : null
        ]));
      });
      main.appendChild(list);
      var pages = Math.max(1, Math.ceil(body.total / body.perPage));
      if (pages > 1) {
        var base = query ? "#/search?q=" + enc(query) + "&page=" : "#/?page=";
        main.appendChild(el("div", { className: "pager" }, [
          page > 1 ? el("a", { href: base + (page - 1), text: "\u2190 Previous" }) : null,
          el("span", { className: "muted", text: "Page " + page + " of " + pages }),
          page < pages ? el("a", { href: base + (page + 1), text: "Next \u2192" }) : null
        ]));
      }
    }, function (err) { status.remove(); showError(main, err); });
  }

  // ---- package and release ------------------------------------------------------------------
  function copyButton(text) {
    var button = el("button", { type: "button", id: "copy-install", text: "Copy" });
    button.addEventListener("click", function () {
      var done = function () { button.textContent = "Copied"; setTimeout(function () { button.textContent = "Copy"; }, 1500); };
      if (navigator.clipboard && navigator.clipboard.writeText) navigator.clipboard.writeText(text).then(done, function () {});
    });
    return button;
  }

  function renderPackage(name, version) {
    clear(main);
    document.title = name + " - upm";
    var status = el("p", { className: "muted", text: "Loading\u2026" });
    main.appendChild(status);
    return getJson(api("/" + name)).then(function (pkg) {
      status.remove();
      var current = null;
      pkg.versions.forEach(function (v) { if (v.version === (version || pkg.latest)) current = v; });
      if (!current) { showError(main, new Error(name + " has no version " + version)); return; }
      var base = api("/" + name + "/" + enc(current.version));
      main.appendChild(el("h1", { id: "package-name", text: pkg.name }));
      main.appendChild(el("p", { className: "description", id: "package-description", text: current.description || "" }));
      var cmd = "upm install " + pkg.name + "@" + current.version;
      main.appendChild(el("div", { className: "install" }, [el("code", { id: "install-cmd", text: cmd }), copyButton(cmd)]));
      main.appendChild(el("div", { className: "downloads" }, [
        el("a", { className: "button", id: "download-tgz", href: base + "/archive.tar.gz", download: "", text: "Download .tar.gz" }),
        el("a", { className: "button secondary", id: "download-zip", href: base + "/archive.zip", download: "", text: "Download .zip" })
      ]));
      var deps = Object.keys(current.dependencies || {});
      var meta = el("dl", { className: "meta" }, [
        el("dt", { text: "Version" }), el("dd", { id: "package-version", text: current.version + (current.version === pkg.latest ? " (latest)" : "") }),
        el("dt", { text: "Published" }), el("dd", { text: formatDate(current.date) }),
        el("dt", { text: "Signature" }), el("dd", null, [
          el("span", { className: "badge " + (current.verified ? "ok" : "bad"), text: current.verified ? "verified" : "not verified" }),
          " ", el("span", { className: "mono", text: current.signer || "unsigned" }),
          current.verification ? el("div", { className: "muted", text: current.verification }) : null
        ]),
        el("dt", { text: "Release hash" }), el("dd", { className: "mono", text: current.hash }),
        el("dt", { text: "License" }), el("dd", { text: current.license || "none given" }),
        el("dt", { text: "Dependencies" }), el("dd", null, deps.length === 0 ? ["none"] : deps.map(function (d, i) {
          return el("span", null, [i > 0 ? ", " : null, el("a", { href: pageLink(d), text: d }), " " + current.dependencies[d]]);
        }))
      ]);
      main.appendChild(meta);
      var versions = el("ul", { className: "versions", id: "versions" });
      pkg.versions.forEach(function (v) {
        versions.appendChild(el("li", { className: v.version === current.version ? "current" : null }, [
          el("a", { href: pageLink(pkg.name, v.version), text: v.version })
        ]));
      });
      main.appendChild(el("h2", { text: "Versions" }));
      main.appendChild(versions);
      var readme = el("section", { id: "readme" }, [el("p", { className: "muted", text: "Loading README\u2026" })]);
      main.appendChild(el("h2", { text: "README" }));
      main.appendChild(readme);
      getJson(base + "/readme").then(function (r) {
        readme.innerHTML = policy.createHTML(r.html);
      }, function (err) {
        clear(readme);
        readme.appendChild(el("p", { className: "muted", text: err.status === 404 ? "No README." : err.message }));
      });
      var files = el("section", { id: "files" }, [el("p", { className: "muted", text: "Loading files\u2026" })]);
      main.appendChild(el("h2", { text: "Files" }));
      main.appendChild(files);
      getJson(base + "/tree").then(function (t) {
        clear(files);
        var table = el("table", { className: "files" });
        t.entries.forEach(function (e) {
          if (e.type === "directory") return;
          table.appendChild(el("tr", null, [
            el("td", null, [el("a", { href: pageLink(pkg.name, current.version) + "/f/" + pathOf(e.path), text: e.path })]),
            el("td", { className: "size", text: formatSize(e.size) })
          ]));
        });
        files.appendChild(table);
      }, function (err) { clear(files); showError(files, err); });
    }, function (err) { status.remove(); showError(main, err); });
  }

  function renderFile(name, version, path) {
    clear(main);
    document.title = path + " - " + name + " - upm";
    main.appendChild(el("p", null, [el("a", { href: pageLink(name, version), text: "\u2190 " + name + " " + version })]));
    main.appendChild(el("h1", { className: "mono", text: path }));
    var url = api("/" + name + "/" + enc(version) + "/files/" + pathOf(path));
    main.appendChild(el("p", null, [el("a", { className: "button secondary", href: url, download: path.split("/").pop(), text: "Download" })]));
    return fetch(url).then(function (res) {
      var type = res.headers.get("content-type") || "";
      if (!res.ok) return res.json().then(function (b) { throw new Error(b.message || ("HTTP " + res.status)); });
      if (/^(text\/|application\/json)/.test(type)) {
        return res.text().then(function (text) { main.appendChild(el("pre", { id: "file-content", text: text })); });
      }
      if (/^image\//.test(type)) { main.appendChild(el("img", { src: url, alt: path })); return; }
      main.appendChild(el("p", { className: "muted", text: "Binary file (" + type + ")." }));
    }).catch(function (err) { showError(main, err); });
  }

  // ---- routing ------------------------------------------------------------------------------
  function route() {
    var hash = location.hash.replace(/^#/, "") || "/";
    var q = hash.indexOf("?");
    var path = q < 0 ? hash : hash.slice(0, q);
    var params = new URLSearchParams(q < 0 ? "" : hash.slice(q + 1));
    var page = Math.max(1, parseInt(params.get("page") || "1", 10) || 1);
    var parts;
    try { parts = path.split("/").map(decodeURIComponent); } catch (e) { parts = []; }
    if (path === "/" ) return renderList("", page);
    if (path === "/search") return renderList((params.get("q") || "").trim(), page);
    if (parts[1] === "p" && parts.length >= 4) {
      var name = parts[2] + "/" + parts[3];
      if (parts.length >= 7 && parts[5] === "f") return renderFile(name, parts[4], parts.slice(6).join("/"));
      return renderPackage(name, parts[4]);
    }
    clear(main);
    showError(main, new Error("Nothing here: " + hash));
  }

  document.getElementById("search").addEventListener("submit", function (event) {
    event.preventDefault();
    var query = document.getElementById("q").value.trim();
    location.hash = query ? "#/search?q=" + enc(query) : "#/";
  });
  window.addEventListener("hashchange", route);
  // A plain GET of "/?q=…" (the form without JavaScript's help) lands on the search too.
  var initial = new URLSearchParams(location.search).get("q");
  if (initial && !location.hash) location.hash = "#/search?q=" + enc(initial);
  else route();
})();
`
