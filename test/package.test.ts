// Packaging: what `npm pack` puts in the tarball, and that git ignores the tarball. Both license texts package.json names, the README
// and the man page; of dist/src, only the modules the package itself runs (reached from its bins and
// main through imports and `new URL(...)` loads), so no test kit, bench or test file; and no source
// maps, since the TypeScript sources they point at are not shipped. The same reachability, on the
// sources, keeps test kits out of src/: a module no entry point reaches belongs beside its tests.
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const SRC = join(ROOT, "src");

/**
 * Addon wrappers no entry point uses: only src/sys may call the addon, so the bench's poll(2) wait
 * (bench/closed-loop.ts) keeps its wrapper there, and the package ships it.
 */
const UNREACHED_ADDON_WRAPPERS = ["sys/blocking-wait"];

/** Relative `.js` specifiers of static imports, re-exports and `new URL("...", import.meta.url)`. */
const LOCAL_SPECIFIER = /(?:\bfrom\s+|\bimport\s+|new URL\()"(\.{1,2}\/[^"]+\.js)"/g;

/** src/ paths (relative, without extension) of the package's entry points: its bins and main. */
function entryPoints(): string[] {
  const manifest = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as {
    main: string;
    bin: Record<string, string>;
  };
  return [manifest.main, ...Object.values(manifest.bin)].map((path) =>
    path.replace(/^dist\/src\//, "").replace(/\.js$/, ""),
  );
}

/** Every module of src/ the entry points (and the addon wrappers) reach, as src/-relative paths without extension. */
function reachableModules(): Set<string> {
  const reached = new Set<string>();
  const pending = [...entryPoints(), ...UNREACHED_ADDON_WRAPPERS];
  for (let module = pending.pop(); module !== undefined; module = pending.pop()) {
    if (reached.has(module)) continue;
    reached.add(module);
    const text = readFileSync(join(SRC, `${module}.ts`), "utf8");
    for (const [, specifier] of text.matchAll(LOCAL_SPECIFIER)) {
      pending.push(join(dirname(module), specifier!).replace(/\.js$/, ""));
    }
  }
  return reached;
}

function sourceModules(): string[] {
  return readdirSync(SRC, { recursive: true, encoding: "utf8" })
    .filter((path) => path.endsWith(".ts") && !path.endsWith(".test.ts"))
    .map((path) => path.replace(/\.ts$/, ""));
}

describe("the package's modules", () => {
  it("every module in src/ is reached from a bin or main: test and bench kits live beside their tests", () => {
    const reached = reachableModules();
    const unreached = sourceModules().filter((module) => !reached.has(module));
    assert.deepEqual(unreached, [], "move these to test/helpers (or bench/)");
  });
});

describe("npm pack", () => {
  /** The tarball's name and file list, as `npm pack` would make it. */
  let tarball: string;
  let files: string[];

  before(() => {
    const output = execFileSync("npm", ["pack", "--dry-run", "--ignore-scripts", "--json"], {
      cwd: ROOT,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
    });
    const [entry] = JSON.parse(output) as { filename: string; files: { path: string }[] }[];
    assert.ok(entry);
    tarball = entry.filename;
    files = entry.files.map((file) => file.path);
  });

  it("leaves no untracked file: git ignores the tarball", (t) => {
    const check = spawnSync("git", ["check-ignore", "--quiet", tarball], { cwd: ROOT });
    // 128: not a git checkout (or no git), so nothing to leave untracked.
    if (check.error !== undefined || check.status === 128) {
      t.skip("not a git checkout");
      return;
    }
    assert.equal(check.status, 0, `${tarball} is not in .gitignore`);
  });

  it("ships both licenses, the README and the man page", () => {
    for (const path of [
      "LICENSE-APACHE",
      "LICENSE-BSD-3-Clause",
      "README.md",
      "man/vhost-device-i2c.1",
    ]) {
      assert.ok(files.includes(path), path);
    }
  });

  it("ships no source maps (their TypeScript sources are not shipped) and no test files", () => {
    assert.deepEqual(
      files.filter((path) => path.endsWith(".map") || /\.test\./.test(path)),
      [],
    );
  });

  it("ships of dist/src only the modules the package runs", () => {
    const reached = reachableModules();
    const extra = files
      .filter((path) => path.startsWith("dist/src/") && /\.(?:js|d\.ts)$/.test(path))
      .map((path) => relative("dist/src", path).replace(/\.(?:js|d\.ts)$/, ""))
      .filter((module) => !reached.has(module));
    assert.deepEqual([...new Set(extra)], [], "shipped but never run (stale dist/? rm -rf dist)");
  });
});
