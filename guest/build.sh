#!/bin/bash
# Builds the real-guest test image for vhost-device-i2c: a small x86_64 Linux kernel with
# virtio-i2c (from Debian's linux-source-6.1, or another series with --kernel) and an initramfs
# with busybox and i2c-tools. Output lives in a cache OUTSIDE the repository, keyed by everything
# that shapes it; a rerun with the same inputs only prints the paths. It must not touch the
# repository's files.
#
# Usage: guest/build.sh [--check] [--kernel SERIES] [--variant NAME] [outdir]
#   outdir           where bzImage and initramfs.cpio go
#                    (default: ${XDG_CACHE_HOME:-$HOME/.cache}/vhost-device-i2c/guest/<key>)
#   --check          build nothing: print the paths and exit 0 when a finished image exists, else exit 3
#   --kernel SERIES  the kernel series, built from Debian's linux-source-SERIES (default: the
#                    environment's VHOST_DEVICE_I2C_GUEST_LINUX, else 6.1; 6.12 is in bookworm-security)
#   --variant NAME   also merge guest/kernel.config.NAME.fragment (default: the environment's
#                    VHOST_DEVICE_I2C_GUEST_VARIANT, else none); its modules are copied into the image
# Prints: GUEST_KERNEL=<path>, GUEST_INITRD=<path>, GUEST_DIR=<path> on stdout (progress on stderr).
# Needs root for apt-get when packages are missing.
set -euo pipefail

check_only=0
outdir=""
kernel_series=${VHOST_DEVICE_I2C_GUEST_LINUX:-6.1}
variant=${VHOST_DEVICE_I2C_GUEST_VARIANT:-}
while (($#)); do
  case "$1" in
    --check) check_only=1 ;;
    --kernel)
      (($# >= 2)) || { echo "build.sh: --kernel needs a series, e.g. 6.12" >&2; exit 2; }
      kernel_series=$2
      shift
      ;;
    --kernel=*) kernel_series=${1#--kernel=} ;;
    --variant)
      (($# >= 2)) || { echo "build.sh: --variant needs a name, e.g. realkernel" >&2; exit 2; }
      variant=$2
      shift
      ;;
    --variant=*) variant=${1#--variant=} ;;
    -h | --help) sed -n '8,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "build.sh: unknown option $1" >&2; exit 2 ;;
    *) outdir=$1 ;;
  esac
  shift
done
[[ "$kernel_series" =~ ^[0-9]+\.[0-9]+$ ]] || { echo "build.sh: --kernel wants a series like 6.12, not $kernel_series" >&2; exit 2; }

# Its name is one of the package versions in the cache key, so each series has its own image.
readonly KERNEL_PACKAGE=linux-source-$kernel_series
readonly USER_PACKAGES=(busybox i2c-tools libi2c0)
readonly BUILD_DEPENDENCIES=(build-essential flex bison bc libelf-dev cpio xz-utils qemu-system-x86 "$KERNEL_PACKAGE")
readonly I2C_TOOLS=(i2cdetect i2cget i2cset i2cdump i2ctransfer)

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly here
readonly fragment="$here/kernel.config.fragment"
# The variant's fragment is merged after the base one; with no variant it is the base again (harmless).
if [[ -n "$variant" ]]; then
  [[ "$variant" =~ ^[a-z0-9-]+$ ]] || { echo "build.sh: --variant wants a name like realkernel, not $variant" >&2; exit 2; }
  variant_fragment="$here/kernel.config.$variant.fragment"
  [[ -f "$variant_fragment" ]] || { echo "build.sh: no $variant_fragment" >&2; exit 2; }
else
  variant_fragment="$fragment"
fi
readonly variant_fragment
readonly init_script="$here/init"
readonly cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/vhost-device-i2c/guest"

log() { echo "guest/build.sh: $*" >&2; }
die() { echo "guest/build.sh: ERROR: $*" >&2; exit 1; }

# Candidate version apt would install; empty when the package lists do not know the package.
candidate_version() {
  apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { if ($2 != "(none)") print $2 }'
}

# One apt-cache call for all packages (each call costs half a second): "package=version" lines.
package_versions() {
  apt-cache policy "$KERNEL_PACKAGE" "${USER_PACKAGES[@]}" libc6 2>/dev/null |
    awk '/^[^ ].*:$/ { package = substr($0, 1, length($0) - 1) }
         /Candidate:/ { print package "=" ($2 == "(none)" ? "" : $2) }'
}

print_result() {
  echo "GUEST_KERNEL=$1/bzImage"
  echo "GUEST_INITRD=$1/initramfs.cpio"
  echo "GUEST_DIR=$1"
}

compute_key() {
  {
    sha256sum "${BASH_SOURCE[0]}" "$fragment" "$variant_fragment" "$init_script" | awk '{ print $1 }'
    package_versions
  } | sha256sum | cut -c1-16
}

# The whole run is one function, parsed before it starts: editing this file mid-build is harmless.
main() {
  key=$(compute_key)
  if [[ -z "$outdir" ]]; then outdir="$cache_root/$key"; fi

  # The key file is written last, so its presence with the right content means a finished image.
  if [[ -f "$outdir/key" && "$(cat "$outdir/key")" == "$key" && -f "$outdir/bzImage" && -f "$outdir/initramfs.cpio" ]]; then
    print_result "$outdir"
    exit 0
  fi
  if ((check_only)); then
    log "no finished image for key $key in $outdir"
    exit 3
  fi

  # Concurrent builds of one key would share a work directory: the second waits, then finds the image.
  mkdir -p "$cache_root"
  exec 9>"$cache_root/.lock-$key"
  if ! flock -n 9; then
    log "another build of key $key is running; waiting for it"
    flock 9
  fi
  if [[ -f "$outdir/key" && "$(cat "$outdir/key")" == "$key" ]]; then
    print_result "$outdir"
    exit 0
  fi

  build_start=$(date +%s)

  # --- build dependencies ---------------------------------------------------------------------------
  missing=()
  for package in "${BUILD_DEPENDENCIES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
  done
  # The kernel source is keyed by apt's candidate version: an older installed one is upgraded first.
  if [[ "$(dpkg-query -W -f='${Version}' "$KERNEL_PACKAGE" 2>/dev/null)" != "$(candidate_version "$KERNEL_PACKAGE")" &&
    ! " ${missing[*]} " =~ " $KERNEL_PACKAGE " ]]; then
    missing+=("$KERNEL_PACKAGE")
  fi
  if ((${#missing[@]})) || [[ -z "$(candidate_version busybox)" ]]; then
    ((EUID == 0)) || die "missing packages (${missing[*]}); run as root or install them"
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
    # Versions may have moved with the update: the image must carry the key of what it is built from.
    key=$(compute_key)
    if [[ "$outdir" == "$cache_root/"* ]]; then outdir="$cache_root/$key"; fi
  fi
  kernel_version=$(dpkg-query -W -f='${Version}' "$KERNEL_PACKAGE")
  [[ "$kernel_version" == "$(candidate_version "$KERNEL_PACKAGE")" ]] ||
    die "$KERNEL_PACKAGE $kernel_version is installed but apt would install $(candidate_version "$KERNEL_PACKAGE"); run apt-get install $KERNEL_PACKAGE"

  work="$cache_root/work/$key"
  rm -rf "$work"
  mkdir -p "$work" "$outdir"

  # --- kernel source, unpacked once per source version ----------------------------------------------
  source_dir="$cache_root/src/$KERNEL_PACKAGE-$kernel_version"
  if [[ ! -f "$source_dir/Makefile" ]]; then
    log "unpacking /usr/src/$KERNEL_PACKAGE.tar.xz"
    rm -rf "$source_dir" "$source_dir.tmp"
    mkdir -p "$source_dir.tmp"
    nice -n 19 tar -xf "/usr/src/$KERNEL_PACKAGE.tar.xz" -C "$source_dir.tmp"
    mv "$source_dir.tmp/$KERNEL_PACKAGE" "$source_dir"
    rmdir "$source_dir.tmp"
  fi

  # --- kernel configuration -------------------------------------------------------------------------
  kbuild="$work/kernel"
  mkdir -p "$kbuild"
  kmake() { nice -n 19 make -s -C "$source_dir" O="$kbuild" ARCH=x86_64 "$@"; }
  log "configuring the kernel (tinyconfig + $(basename "$fragment"))"
  config_log="$work/config.log"
  {
    kmake tinyconfig &&
      (cd "$kbuild" && "$source_dir/scripts/kconfig/merge_config.sh" -m -O "$kbuild" .config "$fragment" "$variant_fragment") &&
      kmake olddefconfig
  } >"$config_log" 2>&1 || { cat "$config_log" >&2; die "kernel configuration failed"; }

  not_enabled=()
  while read -r option; do
    # The last fragment to set an option decides whether it must be built in (=y) or a module (=m).
    wanted=$(cat "$fragment" "$variant_fragment" | sed -n "s/^$option=\([ym]\)$/\1/p" | tail -n 1)
    grep -qx "$option=$wanted" "$kbuild/.config" || not_enabled+=("$option")
  done < <(cat "$fragment" "$variant_fragment" | sed -n 's/^\(CONFIG_[A-Za-z0-9_]*\)=[ym]$/\1/p' | sort -u)
  wrongly_enabled=()
  while read -r option; do
    if grep -q "^$option=" "$kbuild/.config"; then wrongly_enabled+=("$option"); fi
  done < <(cat "$fragment" "$variant_fragment" | sed -n 's/^# \(CONFIG_[A-Za-z0-9_]*\) is not set$/\1/p' | sort -u)
  if ((${#not_enabled[@]} || ${#wrongly_enabled[@]})); then
    for option in "${not_enabled[@]}"; do echo "  $option is not as the fragments ask (check its dependencies)" >&2; done
    for option in "${wrongly_enabled[@]}"; do echo "  $option is set but must be off" >&2; done
    die "kernel configuration is missing required options: ${not_enabled[*]} ${wrongly_enabled[*]}"
  fi
  cp "$kbuild/.config" "$outdir/kernel.config"

  # Drivers that can only be modules (i2c-stub `depends on m`) go into the initramfs under /lib/modules.
  kernel_targets=(bzImage)
  if grep -qx 'CONFIG_MODULES=y' "$kbuild/.config"; then kernel_targets+=(modules); fi
  log "building ${kernel_targets[*]} in the background of this script (nice 19, -j2; a cold build takes minutes)"
  kernel_log="$work/kernel-build.log"
  kmake -j2 "${kernel_targets[@]}" >"$kernel_log" 2>&1 &
  kernel_pid=$!
  # A failure while assembling the initramfs must not leave the compiler running.
  trap 'kill "$kernel_pid" 2>/dev/null || true' EXIT

  # --- initramfs ------------------------------------------------------------------------------------
  log "assembling the initramfs"
  debs="$work/debs"
  root="$work/root"
  mkdir -p "$debs" "$root"
  # As root, apt's download sandbox user cannot write here; fetch as root instead of warning.
  apt_options=()
  if ((EUID == 0)); then apt_options=(-o APT::Sandbox::User=root); fi
  (cd "$debs" && apt-get download -q "${apt_options[@]}" "${USER_PACKAGES[@]}" >&2)
  for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$root"; done

  busybox="$root/bin/busybox"
  [[ -x "$busybox" ]] || die "busybox package has no /bin/busybox"
  binaries=("$busybox")
  for tool in "${I2C_TOOLS[@]}"; do
    [[ -x "$root/usr/sbin/$tool" ]] || die "i2c-tools has no /usr/sbin/$tool"
    binaries+=("$root/usr/sbin/$tool")
  done

  # A cpio list for the kernel's own gen_init_cpio: device nodes and ownership without needing root.
  list="$work/initramfs.list"
  gen_init_cpio="$work/gen_init_cpio"
  cc -O2 -o "$gen_init_cpio" "$source_dir/usr/gen_init_cpio.c"
  {
    for dir in /bin /sbin /usr /usr/bin /usr/sbin /lib /lib64 /lib/x86_64-linux-gnu /usr/lib \
      /usr/lib/x86_64-linux-gnu /dev /proc /sys /tmp /run /root /etc /test; do
      echo "dir $dir 0755 0 0"
    done
    echo "nod /dev/console 0600 0 0 c 5 1"
    echo "nod /dev/null 0666 0 0 c 1 3"
    echo "file /init $init_script 0755 0 0"
    echo "file /bin/busybox $busybox 0755 0 0"
    for tool in "${I2C_TOOLS[@]}"; do echo "file /usr/sbin/$tool $root/usr/sbin/$tool 0755 0 0"; done
    # Every busybox applet except its own i2c ones: the i2c-tools binaries answer to those names.
    "$busybox" --list-full | grep -v -e '/i2c[a-z]*$' -e '^bin/busybox$' | sort -u |
      while read -r applet; do echo "slink /$applet /bin/busybox 0777 0 0"; done
    # Shared libraries as the dynamic loader will look for them, resolved against the unpacked packages.
    LD_LIBRARY_PATH="$root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu" ldd "${binaries[@]}" |
      awk '/=> \// { print $1, $3 } /^\t\/[^ ]+ \(/ { print $1, $1 }' | sort -u |
      while read -r name path; do
        if [[ "$name" == /* ]]; then target=$name; else target="/lib/x86_64-linux-gnu/$name"; fi
        echo "file $target $(readlink -f "$path") 0755 0 0"
      done
  } | awk '!seen[$2]++' >"$list"
  grep -q '^file /lib64/ld-linux-x86-64.so.2 ' "$list" || die "the dynamic loader is missing from the initramfs list"
  grep -q '^file /lib/x86_64-linux-gnu/libi2c.so.0 ' "$list" || die "libi2c.so.0 is missing from the initramfs list"

  # --- wait for the kernel --------------------------------------------------------------------------
  if ! wait "$kernel_pid"; then
    tail -n 40 "$kernel_log" >&2
    die "kernel build failed (full log: $kernel_log)"
  fi
  trap - EXIT

  # Modules lie flat in /lib/modules: a test loads one with `insmod /lib/modules/NAME.ko PARAMS`.
  if [[ " ${kernel_targets[*]} " == *" modules "* ]]; then
    echo "dir /lib/modules 0755 0 0" >>"$list"
    while read -r module; do
      echo "file /lib/modules/$(basename "$module") $module 0644 0 0" >>"$list"
    done < <(find "$kbuild" -name '*.ko' | sort)
  fi
  "$gen_init_cpio" "$list" >"$work/initramfs.cpio"

  cp "$kbuild/arch/x86/boot/bzImage" "$outdir/bzImage"
  cp "$work/initramfs.cpio" "$outdir/initramfs.cpio"
  cp "$list" "$outdir/initramfs.list"
  package_versions >"$outdir/versions"
  echo "$key" >"$outdir/key"
  rm -rf "$work"
  log "built in $(($(date +%s) - build_start)) s"
  print_result "$outdir"
}

main "$@"; exit
