#!/usr/bin/env bash
# Builds and installs Citus 13.2.2 (schema-based sharding, docs/scaling.md) into the local
# PostgreSQL from the vendored source tarball, and prints the installed `citus.so` (the only
# line on stdout; progress goes to stderr).
#
#   scripts/install-citus.sh [TARBALL]
#
# TARBALL defaults to ../shared/vendor/citus-13.2.2.tar.gz beside this checkout
# (CAPLIQUIFY_CITUS_TARBALL overrides it). No package registry these machines reach ships
# Citus, so it is built here:
#
#   1. nothing is done when this version is already installed for the server's major version
#      (its extension control file says 13.2 and the provenance file written by step 6 names
#      the same tarball digest);
#   2. the tarball's SHA-256 must be the one below, or nothing is built;
#   3. build dependencies come from Debian (apt-get, through sudo when not root):
#      postgresql-server-dev-<major>, liblz4-dev, libzstd-dev, libkrb5-dev (the server's
#      headers include GSSAPI's), gcc, make;
#   4. the source is unpacked under target/citus-build; where the server's headers declare
#      have_createdb_privilege() themselves (PostgreSQL 15.20 and later 15.x), Citus's own
#      static definition of it for PostgreSQL < 16 (src/include/pg_version_compat.h) no
#      longer compiles ("static declaration follows non-static declaration") and is replaced
#      by an #include of the server's header — only then;
#   5. `./configure --without-libcurl` and `make with_llvm=no` (no LLVM bitcode, so no clang
#      needed), then `make install`;
#   6. the provenance (version, tarball SHA-256, whether the compat fix was applied, build
#      time) is written next to the extension's control file.
#
# Each node that runs Citus also needs `shared_preload_libraries = 'citus'` (first in the
# list) and a restart; this script changes no server's configuration.
#
# Citus is AGPL-3.0 and runs inside PostgreSQL as a separate server process; it is never
# linked into capliquify.
set -euo pipefail
cd "$(dirname "$0")/.."
umask 022

VERSION=13.2.2
SHA256=0d61f37a9dd23d3e995f3330b9db485bacbad472ec13268beecb648eb161139d
TARBALL="${1:-${CAPLIQUIFY_CITUS_TARBALL:-$PWD/../shared/vendor/citus-$VERSION.tar.gz}}"
BUILD_DIR="$PWD/target/citus-build"

log() { printf '== install-citus: %s\n' "$*" >&2; }
die() {
  printf '\ninstall-citus: ERROR: %s\n' "$*" >&2
  exit 1
}
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- The server: its major version and its pg_config ---------------------------------------------
major=""
for dir in /usr/lib/postgresql/*/bin; do
  [ -x "$dir/postgres" ] || continue
  m="$(basename "$(dirname "$dir")")"
  if [ -z "$major" ] || [ "$m" -gt "$major" ]; then major="$m"; fi
done
[ -n "$major" ] || die "no PostgreSQL server found under /usr/lib/postgresql (apt-get install postgresql)"
case "$major" in
  15 | 16 | 17) ;;
  *) die "Citus $VERSION supports PostgreSQL 15 to 17; the server here is $major" ;;
esac
PG_CONFIG="/usr/lib/postgresql/$major/bin/pg_config"

# --- 1. Already installed? -----------------------------------------------------------------------
if [ -x "$PG_CONFIG" ]; then
  sharedir="$("$PG_CONFIG" --sharedir)"
  pkglibdir="$("$PG_CONFIG" --pkglibdir)"
  provenance="$sharedir/extension/citus.capliquify-provenance"
  if [ -f "$pkglibdir/citus.so" ] && [ -f "$sharedir/extension/citus.control" ] &&
    grep -q "^default_version = '13\.2-" "$sharedir/extension/citus.control" &&
    [ -f "$provenance" ] && grep -q "^sha256 $SHA256$" "$provenance"; then
    log "Citus $VERSION is already installed for PostgreSQL $major ($provenance)"
    echo "$pkglibdir/citus.so"
    exit 0
  fi
fi

# --- 2. The tarball ------------------------------------------------------------------------------
[ -f "$TARBALL" ] || die "the Citus source tarball is not at $TARBALL (give its path as the first argument)"
TARBALL="$(realpath "$TARBALL")"
actual="$(sha256sum "$TARBALL" | cut -d' ' -f1)"
[ "$actual" = "$SHA256" ] || die "$TARBALL has SHA-256 $actual, expected $SHA256; nothing was built"
log "verified $TARBALL (SHA-256 $SHA256)"

# --- 3. Build dependencies -----------------------------------------------------------------------
deps=("postgresql-server-dev-$major" liblz4-dev libzstd-dev libkrb5-dev gcc make libc6-dev)
missing=()
for p in "${deps[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing build dependencies: ${missing[*]}"
  as_root apt-get update -qq >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
[ -x "$PG_CONFIG" ] || die "$PG_CONFIG is missing after installing postgresql-server-dev-$major"

# --- 4. Source, and the compat fix where the headers need it -------------------------------------
rm -rf "$BUILD_DIR"
mkdir -p "$BUILD_DIR"
tar -xzf "$TARBALL" -C "$BUILD_DIR"
src="$BUILD_DIR/citus-$VERSION"
[ -f "$src/configure" ] || die "$TARBALL does not hold citus-$VERSION/configure"
compat="$src/src/include/pg_version_compat.h"
fixed=no
if grep -q 'have_createdb_privilege' "$("$PG_CONFIG" --includedir-server)/commands/dbcommands.h" &&
  grep -q '^have_createdb_privilege(void)$' "$compat"; then
  # The server declares it (extern): drop Citus's static copy and use the server's.
  perl -0pi -e 's/static inline bool\nhave_createdb_privilege\(void\)\n\{\n.*?\n\}\n/#include "commands\/dbcommands.h"\n/s' "$compat"
  if grep -q '^have_createdb_privilege(void)$' "$compat" || ! grep -q '#include "commands/dbcommands.h"' "$compat"; then
    die "could not replace have_createdb_privilege() in $compat"
  fi
  fixed=yes
  log "the server's headers declare have_createdb_privilege(): Citus's compat copy replaced by their #include"
fi

# --- 5. Build and install ------------------------------------------------------------------------
jobs="$(nproc 2>/dev/null || echo 2)"
started=$(date +%s)
log "configuring and building Citus $VERSION for PostgreSQL $major (make -j$jobs with_llvm=no)"
(
  cd "$src"
  ./configure --without-libcurl PG_CONFIG="$PG_CONFIG" >"$BUILD_DIR/configure.log" 2>&1 ||
    { tail -30 "$BUILD_DIR/configure.log" >&2; exit 1; }
  make -j"$jobs" with_llvm=no >"$BUILD_DIR/make.log" 2>&1 ||
    { grep -E 'error:|\*\*\*' "$BUILD_DIR/make.log" | head -20 >&2; exit 1; }
) || die "the build failed (logs in $BUILD_DIR)"
built=$(($(date +%s) - started))
log "built in ${built} s; installing"
as_root make -C "$src" install with_llvm=no >"$BUILD_DIR/install.log" 2>&1 ||
  { tail -20 "$BUILD_DIR/install.log" >&2; die "make install failed"; }

# --- 6. Provenance -------------------------------------------------------------------------------
sharedir="$("$PG_CONFIG" --sharedir)"
pkglibdir="$("$PG_CONFIG" --pkglibdir)"
printf 'citus %s\nsha256 %s\ncompat_fix %s\nbuild_seconds %s\nbuilt_at %s\n' \
  "$VERSION" "$SHA256" "$fixed" "$built" "$(date -u +%FT%TZ)" |
  as_root tee "$sharedir/extension/citus.capliquify-provenance" >/dev/null
[ -f "$pkglibdir/citus.so" ] || die "make install did not produce $pkglibdir/citus.so"
log "Citus $VERSION installed for PostgreSQL $major in ${built} s of build (add 'citus' first to shared_preload_libraries to use it)"
echo "$pkglibdir/citus.so"
