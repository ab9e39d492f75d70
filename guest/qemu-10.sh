#!/bin/bash
# Installs QEMU 10.0 (Debian bookworm-backports) BESIDE the system's QEMU 7.2, for running the
# end-to-end tests against both: the packages are unpacked (dpkg -x, never installed) into a prefix
# in a cache OUTSIDE the repository, and a wrapper script runs that build with its own modules and
# firmware. A rerun with the same inputs only prints the wrapper's path. The system QEMU, dpkg's
# database and the repository's files are never touched; only apt's sources gain the suite.
#
# Usage: guest/qemu-10.sh [--check]
#   --check  install nothing: print the wrapper's path and exit 0 when it is installed, else exit 3
# Prints: QEMU_10=<path of the wrapper, named qemu-system-x86_64> on stdout (progress on stderr).
# Put the wrapper's directory first in PATH, or pass its path in VHOST_DEVICE_I2C_QEMU, to run the
# e2e tests on QEMU 10. Needs root to add bookworm-backports to apt's sources when it is missing.
set -euo pipefail

# The versions the project measured (docs: REFERENCE section 5.5). When the archive no longer has
# one, the suite's current candidate is taken instead and the run says so.
readonly QEMU_VERSION='1:10.0.2+ds-2+deb13u1~bpo12+1'
readonly SEABIOS_VERSION='1.16.3-2~bpo12+1'
readonly QEMU_PACKAGES=(qemu-system-x86 qemu-system-common qemu-system-data
  qemu-system-modules-opengl qemu-system-modules-spice)
readonly SUITE=bookworm-backports
readonly SUITE_FILE=/etc/apt/sources.list.d/$SUITE.sources

readonly cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/vhost-device-i2c/qemu-10"
readonly prefix="$cache_root/prefix"
readonly wrapper="$cache_root/bin/qemu-system-x86_64"

check_only=0
for arg in "$@"; do
  case "$arg" in
    --check) check_only=1 ;;
    -h | --help) sed -n '8,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "qemu-10.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

log() { echo "guest/qemu-10.sh: $*" >&2; }
die() { echo "guest/qemu-10.sh: ERROR: $*" >&2; exit 1; }

# What a finished install was made from: this script and the versions it asked for.
compute_key() {
  { sha256sum "${BASH_SOURCE[0]}" | awk '{ print $1 }'; echo "$QEMU_VERSION $SEABIOS_VERSION"; } |
    sha256sum | cut -c1-16
}

# Another apt or dpkg run (an install by guest/build.sh, unattended upgrades) holds these locks.
wait_for_apt() {
  command -v fuser >/dev/null || return 0
  local waited=0
  while fuser /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock >/dev/null 2>&1; do
    ((waited % 30 == 0)) && log "waiting for another apt/dpkg run to finish (${waited} s)"
    ((waited < 1800)) || die "apt's lock still held after ${waited} s"
    sleep 2
    waited=$((waited + 2))
  done
}

# The file of apt's sources that names the suite (uncommented), or nothing.
suite_source_file() {
  grep -lsE "^[^#]*[[:space:]]$SUITE([[:space:]]|\$)" /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
    /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 || true
}

# Every version of a package apt knows from the suite, newest first.
suite_versions() {
  apt-cache madison "$1" 2>/dev/null | awk -F'|' -v suite="$SUITE/" \
    'index($3, suite) { gsub(/ /, "", $2); print $2 }'
}

# The pinned version when the suite still has it, else its newest one (with a note); dies if neither.
pick_version() {
  local package=$1 wanted=$2 versions
  versions=$(suite_versions "$package")
  if grep -qxF -- "$wanted" <<<"$versions"; then
    echo "$wanted"
    return
  fi
  local newest
  newest=$(head -n1 <<<"$versions")
  [[ -n "$newest" ]] || die "$SUITE has no $package"
  log "NOTE: $package $wanted is gone from $SUITE; taking its candidate $newest instead"
  echo "$newest"
}

main() {
  key=$(compute_key)
  if [[ -f "$cache_root/key" && "$(cat "$cache_root/key")" == "$key" && -x "$wrapper" ]]; then
    echo "QEMU_10=$wrapper"
    exit 0
  fi
  if ((check_only)); then
    log "QEMU 10 is not installed in $cache_root"
    exit 3
  fi

  mkdir -p "$cache_root"
  exec 9>"$cache_root/.lock"
  if ! flock -n 9; then
    log "another run is installing QEMU 10; waiting for it"
    flock 9
  fi
  if [[ -f "$cache_root/key" && "$(cat "$cache_root/key")" == "$key" && -x "$wrapper" ]]; then
    echo "QEMU_10=$wrapper"
    exit 0
  fi
  rm -f "$cache_root/key"

  # --- apt's sources: the suite, and its package list -----------------------------------------------
  source_file=$(suite_source_file)
  if [[ -z "$source_file" ]]; then
    ((EUID == 0)) || die "apt's sources lack $SUITE; run as root or add it"
    log "adding $SUITE to apt's sources ($SUITE_FILE)"
    cat >"$SUITE_FILE" <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: $SUITE
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    source_file=$SUITE_FILE
  fi
  if [[ -z "$(suite_versions qemu-system-x86)" ]]; then
    ((EUID == 0)) || die "apt has no package list for $SUITE; run as root or apt-get update"
    wait_for_apt
    # Only the suite's own list: other lists keep their versions, so guest/build.sh's cache key
    # (which includes apt's candidate versions) does not move under a built image.
    log "apt-get update for $source_file only"
    DEBIAN_FRONTEND=noninteractive apt-get update -q -o DPkg::Lock::Timeout=600 \
      -o Dir::Etc::sourcelist="$source_file" -o Dir::Etc::sourceparts=- \
      -o APT::Get::List-Cleanup=0 >&2
  fi
  qemu_version=$(pick_version qemu-system-x86 "$QEMU_VERSION")
  seabios_version=$(pick_version seabios "$SEABIOS_VERSION")

  # --- download and unpack ---------------------------------------------------------------------------
  work="$cache_root/work"
  rm -rf "$work" "$prefix"
  mkdir -p "$work/debs" "$work/prefix"
  apt_options=()
  if ((EUID == 0)); then apt_options=(-o APT::Sandbox::User=root); fi
  wanted=()
  for package in "${QEMU_PACKAGES[@]}"; do wanted+=("$package=$qemu_version"); done
  wanted+=("seabios=$seabios_version")
  log "downloading ${wanted[*]}"
  (cd "$work/debs" && apt-get download -q "${apt_options[@]}" "${wanted[@]}" >&2)
  for deb in "$work/debs"/*.deb; do dpkg-deb -x "$deb" "$work/prefix"; done
  [[ -x "$work/prefix/usr/bin/qemu-system-x86_64" ]] || die "qemu-system-x86 has no /usr/bin/qemu-system-x86_64"
  [[ -d "$work/prefix/usr/lib/x86_64-linux-gnu/qemu" ]] || die "no module directory in the unpacked packages"
  mv "$work/prefix" "$prefix"

  # --- the wrapper -----------------------------------------------------------------------------------
  # Without QEMU_MODULE_DIR the 10.0 binary loads 7.2's modules from /usr and aborts ("Only modules
  # from the same build can be loaded"); -L points it at its own ROMs and SeaBIOS, not /usr/share's.
  mkdir -p "$(dirname "$wrapper")"
  quoted_prefix=$(printf '%q' "$prefix")
  cat >"$wrapper.tmp" <<EOF
#!/bin/sh
# QEMU $qemu_version unpacked by guest/qemu-10.sh (SeaBIOS $seabios_version), beside the system QEMU.
prefix=$quoted_prefix
export QEMU_MODULE_DIR="\$prefix/usr/lib/x86_64-linux-gnu/qemu"
exec "\$prefix/usr/bin/qemu-system-x86_64" -L "\$prefix/usr/share/qemu" -L "\$prefix/usr/share/seabios" "\$@"
EOF
  chmod 755 "$wrapper.tmp"
  mv "$wrapper.tmp" "$wrapper"

  version_line=$("$wrapper" --version | head -n1)
  [[ "$version_line" == *"version 10."* ]] || die "the wrapper runs \"$version_line\", not QEMU 10"
  log "$version_line"
  printf 'qemu-system-x86=%s\nseabios=%s\n' "$qemu_version" "$seabios_version" >"$cache_root/versions"
  rm -rf "$work"
  echo "$key" >"$cache_root/key"
  echo "QEMU_10=$wrapper"
}

main "$@"; exit
