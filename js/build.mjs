// Bundle js/src/widget.js (dagre included, CSS inlined as text) into
// hessexplore/static/widget.js: one self-contained ES module, nothing fetched at run time.
// Usage: node build.mjs [--dev]   (--dev: not minified, inline source map)
import { build } from "esbuild";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

const here = dirname(fileURLToPath(import.meta.url));
const dev = process.argv.includes("--dev");
const licence = (pkg) => {
  const text = readFileSync(join(here, "node_modules", pkg, "LICENSE"), "utf8").trim();
  const { version } = JSON.parse(readFileSync(join(here, "node_modules", pkg, "package.json"), "utf8"));
  return `${pkg}@${version}\n\n${text}`;
};
const notice = ["@dagrejs/dagre", "@dagrejs/graphlib"].map(licence).join("\n\n---\n\n").replace(/\*\//g, "* /");

await build({
  entryPoints: [join(here, "src", "widget.js")],
  outfile: join(here, "..", "hessexplore", "static", "widget.js"),
  bundle: true,
  format: "esm",
  target: "es2020",
  platform: "browser",
  minify: !dev,
  sourcemap: dev ? "inline" : false,
  loader: { ".css": "text" },
  legalComments: "none",
  banner: { js: `/*! hessexplore explorer widget (built ${dev ? "dev" : "release"}). Bundled third-party code:\n\n${notice}\n*/` },
  logLevel: "info",
});
