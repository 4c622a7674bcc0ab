#!/usr/bin/env bash
# Makes a PgBouncer >= 1.21 available for tests/it/pgbouncer.rs and prints its path (the only
# line on stdout; progress goes to stderr).
#
#   scripts/install-pgbouncer.sh [PREFIX]
#
# PgBouncer >= 1.21 carries sqlx's prepared statements in transaction mode
# (`max_prepared_statements`); Debian 12 ships 1.18. When a new enough `pgbouncer` is already
# on PATH, in /usr/sbin or /usr/local/{s,}bin, or in PREFIX/bin, nothing is done.
#
# Otherwise this builds Debian 13 ("trixie")'s source package from the Debian archive that apt
# is configured with (the first non-security `URIs:` of /etc/apt/sources.list.d/debian.sources,
# or a `deb` line of /etc/apt/sources.list; CAPLIQUIFY_DEBIAN_MIRROR overrides it), after
# checking the whole chain:
#
#   dists/trixie/InRelease    signed by a key of /usr/share/keyrings/debian-archive-keyring.gpg
#                             (gpgv; any bad signature fails)
#   main/source/Sources.xz    SHA256 and size as listed in that InRelease
#   pgbouncer_*.orig.tar.gz   SHA256 and size as listed in Sources (same for *.debian.tar.xz,
#                             whose patches — Debian's security fixes — are applied)
#
# Any mismatch stops the script before anything is built. The build needs only Debian 12
# packages (installed with apt-get when missing); the manual pages ship prebuilt in the
# tarball, so only the `pgbouncer` binary is built (no pandoc) and installed as
# PREFIX/bin/pgbouncer, with PREFIX/share/pgbouncer/PROVENANCE recording what was verified.
#
# PREFIX defaults to target/pgbouncer in this checkout (git-ignored; `cargo clean` removes
# it). PgBouncer refuses to run as root, so when we are root the tests run it as `postgres`
# (else `nobody`): the installed binary must be executable by that account. If it cannot
# reach target/ (say, the checkout is under /root), the default PREFIX becomes /usr/local
# instead; an explicit PREFIX that account cannot use is an error.
set -euo pipefail
cd "$(dirname "$0")/.."
umask 022

MIN_VERSION=1.21
SUITE=trixie
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
DEFAULT_PREFIX="$PWD/target/pgbouncer"
BUILD_DEPS=(gcc libc6-dev make pkg-config libevent-dev libssl-dev xz-utils gpgv curl
  ca-certificates patch debian-archive-keyring)

log() { printf '== install-pgbouncer: %s\n' "$*" >&2; }
die() {
  printf '\ninstall-pgbouncer: ERROR: %s\n' "$*" >&2
  exit 1
}
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# "1.24.1" from `pgbouncer --version`, or nothing.
version_of() {
  "$1" --version 2>/dev/null | sed -n '1s/^PgBouncer \([0-9][0-9.]*\).*/\1/p' || true
}
# version_ge A B: A >= B.
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

# The account the tests run PgBouncer as when we are root (as tests/it/pgbouncer.rs chooses it).
RUN_AS=""
if [ "$(id -u)" = 0 ]; then
  if getent passwd postgres >/dev/null; then RUN_AS=postgres
  elif getent passwd nobody >/dev/null; then RUN_AS=nobody
  else die "running as root, but there is neither a 'postgres' nor a 'nobody' user to run PgBouncer as (it refuses to run as root)"
  fi
fi
# as_runner CMD...: runs CMD as the account that will run PgBouncer.
as_runner() {
  if [ -z "$RUN_AS" ]; then
    "$@"
  else
    setpriv --reuid="$(id -u "$RUN_AS")" --regid="$(id -g "$RUN_AS")" --clear-groups "$@"
  fi
}
runnable() { as_runner "$1" --version >/dev/null 2>&1; }

# --- 1. Already there? -------------------------------------------------------------------------
prefix_arg="${1:-}"
candidates=()
[ -n "$prefix_arg" ] && candidates+=("$prefix_arg/bin/pgbouncer")
candidates+=("$DEFAULT_PREFIX/bin/pgbouncer" /usr/local/bin/pgbouncer)
if on_path="$(command -v pgbouncer 2>/dev/null)"; then candidates+=("$on_path"); fi
candidates+=(/usr/sbin/pgbouncer /usr/local/sbin/pgbouncer)
best="" best_version="" seen=" "
for bin in "${candidates[@]}"; do
  [ -x "$bin" ] || continue
  real="$(readlink -f "$bin")"
  case "$seen" in *" $real "*) continue ;; esac
  seen+="$real "
  v="$(version_of "$bin")"
  [ -n "$v" ] || continue
  if ! version_ge "$v" "$MIN_VERSION"; then
    log "found $bin (PgBouncer $v): older than $MIN_VERSION"
    continue
  fi
  if ! runnable "$bin"; then
    log "found $bin (PgBouncer $v), but user '$RUN_AS' cannot run it"
    continue
  fi
  if [ -z "$best" ] || ! version_ge "$best_version" "$v"; then best="$bin" best_version="$v"; fi
done
if [ -n "$best" ]; then
  log "PgBouncer $best_version is already installed: $best"
  echo "$best"
  exit 0
fi

# --- 2. Where to install ------------------------------------------------------------------------
if [ -n "$prefix_arg" ]; then
  PREFIX="$prefix_arg"
else
  PREFIX="$DEFAULT_PREFIX"
  mkdir -p "$(dirname "$PREFIX")"
  if [ -n "$RUN_AS" ] && ! as_runner test -x "$(dirname "$PREFIX")"; then
    log "user '$RUN_AS' (who runs PgBouncer for the tests, as we are root) cannot reach $(dirname "$PREFIX"); installing into /usr/local instead"
    PREFIX=/usr/local
  fi
fi
case "$PREFIX" in /*) ;; *) PREFIX="$PWD/$PREFIX" ;; esac
log "no PgBouncer >= $MIN_VERSION found; building Debian $SUITE's into $PREFIX"

# --- 3. Build dependencies (Debian packages) ----------------------------------------------------
missing=()
for pkg in "${BUILD_DEPS[@]}"; do
  status="$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)"
  [ "$status" = installed ] || missing+=("$pkg")
done
command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing build dependencies with apt-get: ${missing[*]}"
  as_root apt-get update -q >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${missing[@]}" >&2
fi

# --- 4. The archive apt uses --------------------------------------------------------------------
mirror="${CAPLIQUIFY_DEBIAN_MIRROR:-}"
if [ -z "$mirror" ] && [ -r /etc/apt/sources.list.d/debian.sources ]; then
  # deb822 stanzas: the first URI of the first stanza with a non-security suite and `main`.
  mirror="$(awk '
    function flush() {
      if (uris != "" && suites != "" && suites !~ /-security/ && comps ~ /(^| )main( |$)/ && out == "") {
        split(uris, u, " "); out = u[1]
      }
      uris = suites = comps = ""
    }
    /^[[:space:]]*$/ { flush(); next }
    /^#/ { next }
    /^URIs:/       { sub(/^URIs:[[:space:]]*/, "");       uris = $0 }
    /^Suites:/     { sub(/^Suites:[[:space:]]*/, "");     suites = $0 }
    /^Components:/ { sub(/^Components:[[:space:]]*/, ""); comps = $0 }
    END { flush(); print out }
  ' /etc/apt/sources.list.d/debian.sources)"
fi
if [ -z "$mirror" ] && [ -r /etc/apt/sources.list ]; then
  mirror="$(awk '$1 == "deb" || $1 == "deb-src" {
      i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
      if ($(i+1) !~ /-security/ && $0 ~ / main( |$)/) { print $i; exit }
    }' /etc/apt/sources.list)"
fi
[ -n "$mirror" ] || die "cannot find the Debian archive in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list (set CAPLIQUIFY_DEBIAN_MIRROR to its base URI)"
case "$mirror" in
  http://* | https://*) ;;
  *) die "the Debian archive URI '$mirror' is not http(s); set CAPLIQUIFY_DEBIAN_MIRROR" ;;
esac
mirror="${mirror%/}"
log "Debian archive (from apt's configuration): $mirror"

work="$(mktemp -d "${TMPDIR:-/tmp}/capliquify-pgbouncer-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
fetch() {
  log "downloading $2"
  curl -fsSL --retry 3 --connect-timeout 20 -o "$work/$1" "$mirror/$2" \
    || die "download failed: $mirror/$2"
}
# check_file FILE SHA256 SIZE WHAT
check_file() {
  local actual size
  actual="$(sha256sum "$work/$1" | cut -d' ' -f1)"
  size="$(stat -c %s "$work/$1")"
  [ "$actual" = "$2" ] && [ "$size" = "$3" ] || die "VERIFICATION FAILED for $4 ($1):
  expected SHA256 $2, size $3
  got      SHA256 $actual, size $size
Nothing was built. Retry later (a mirror mid-update) or check the mirror."
  log "verified $1: SHA256 $actual (as listed in $5)"
}

# --- 5. InRelease: signed by the Debian archive keys --------------------------------------------
[ -r "$KEYRING" ] || die "the Debian archive keyring $KEYRING is missing (package debian-archive-keyring)"
fetch InRelease "dists/$SUITE/InRelease"
if ! gpgv --keyring "$KEYRING" --status-fd 3 --output "$work/Release" "$work/InRelease" \
  3>"$work/gpgv.status" 2>"$work/gpgv.log"; then
  : # gpgv fails when one of several signatures is by a key we lack; judged below
fi
if grep -q '^\[GNUPG:\] BADSIG' "$work/gpgv.status" \
  || ! grep -q '^\[GNUPG:\] VALIDSIG' "$work/gpgv.status" || [ ! -s "$work/Release" ]; then
  cat "$work/gpgv.log" >&2
  die "VERIFICATION FAILED: dists/$SUITE/InRelease has no valid signature by a key of $KEYRING (or a bad one). Nothing was built."
fi
signers="$(awk '$2 == "VALIDSIG" { print $NF }' "$work/gpgv.status" | paste -sd' ')"
log "verified dists/$SUITE/InRelease: good signature(s) by $signers"
codename="$(sed -n 's/^Codename: //p' "$work/Release")"
[ "$codename" = "$SUITE" ] || die "VERIFICATION FAILED: dists/$SUITE/InRelease is for '$codename', not '$SUITE'"
valid_until="$(sed -n 's/^Valid-Until: //p' "$work/Release")"
if [ -n "$valid_until" ] && [ "$(date -u -d "$valid_until" +%s)" -lt "$(date -u +%s)" ]; then
  die "VERIFICATION FAILED: dists/$SUITE/InRelease expired ($valid_until)"
fi

# --- 6. Sources.xz: as listed in InRelease ------------------------------------------------------
read -r sources_sha sources_size < <(awk '
  /^[^ ]/ { in_sha = ($0 == "SHA256:") ; next }
  in_sha && $3 == "main/source/Sources.xz" { print $1, $2; exit }' "$work/Release") \
  || die "dists/$SUITE/InRelease lists no SHA256 for main/source/Sources.xz"
fetch Sources.xz "dists/$SUITE/main/source/Sources.xz"
check_file Sources.xz "$sources_sha" "$sources_size" "main/source/Sources.xz" "the signed InRelease"
xz -dc "$work/Sources.xz" >"$work/Sources" || die "cannot decompress Sources.xz"

# --- 7. The pgbouncer source package: as listed in Sources --------------------------------------
# The stanza of the newest pgbouncer (trixie lists one).
awk -v RS= -v out="$work/stanza." '/(^|\n)Package: pgbouncer(\n|$)/ { n++; print > (out n) }' \
  "$work/Sources"
version="" stanza=""
for f in "$work"/stanza.*; do
  [ -f "$f" ] || die "Debian $SUITE's Sources lists no pgbouncer source package"
  v="$(sed -n 's/^Version: //p' "$f")"
  if [ -z "$version" ] || dpkg --compare-versions "$v" gt "$version"; then
    version="$v" stanza="$(cat "$f")"
  fi
done
directory="$(printf '%s\n' "$stanza" | sed -n 's/^Directory: //p')"
upstream="${version#*:}"
upstream="${upstream%-*}"
version_ge "$upstream" "$MIN_VERSION" \
  || die "Debian $SUITE's pgbouncer is $version, older than $MIN_VERSION"
# Checksums-Sha256 lines: " <sha256> <size> <file>"
checksum() {
  printf '%s\n' "$stanza" | awk -v want="$1" '
    /^[^ ]/ { in_sha = ($0 ~ /^Checksums-Sha256:/); next }
    in_sha && $3 ~ want { print $1, $2, $3; exit }'
}
read -r orig_sha orig_size orig_file < <(checksum '[.]orig[.]tar[.](gz|xz|bz2)$') \
  || die "Sources lists no SHA256 for pgbouncer $version's orig tarball"
read -r deb_sha deb_size deb_file < <(checksum '[.]debian[.]tar[.](gz|xz|bz2)$') \
  || die "Sources lists no SHA256 for pgbouncer $version's debian tarball"
log "Debian $SUITE's pgbouncer source package: $version ($directory)"
fetch "$orig_file" "$directory/$orig_file"
check_file "$orig_file" "$orig_sha" "$orig_size" "the upstream tarball" "the verified Sources"
fetch "$deb_file" "$directory/$deb_file"
check_file "$deb_file" "$deb_sha" "$deb_size" "Debian's packaging (patches)" "the verified Sources"

# --- 8. Unpack, apply Debian's patches, build ---------------------------------------------------
src="$work/src"
mkdir -p "$src"
tar -xf "$work/$orig_file" -C "$src" --strip-components=1
tar -xf "$work/$deb_file" -C "$src"
patches=()
if [ -f "$src/debian/patches/series" ]; then
  while read -r name _; do
    case "$name" in '' | '#'*) continue ;; esac
    log "applying Debian's patch $name"
    patch -d "$src" -p1 --batch --forward --quiet <"$src/debian/patches/$name" >&2 \
      || die "Debian's patch $name does not apply to $orig_file"
    patches+=("$name")
  done <"$src/debian/patches/series"
fi

started=$(date +%s)
log "configuring (OpenSSL; libevent's DNS resolver instead of c-ares; no PAM, no systemd)"
(cd "$src" && ./configure --prefix="$PREFIX" --with-openssl --without-cares --without-pam \
  --without-systemd >"$work/configure.log" 2>&1) \
  || { tail -n 40 "$work/configure.log" >&2; die "configure failed (log above)"; }
log "building the pgbouncer binary (the prebuilt manual pages are not rebuilt: no pandoc)"
jobs="$(nproc 2>/dev/null || echo 2)"
(cd "$src" && make -j"$jobs" pgbouncer >"$work/make.log" 2>&1) \
  || { tail -n 40 "$work/make.log" >&2; die "make failed (log above)"; }

built_version="$(version_of "$src/pgbouncer")"
[ "$built_version" = "$upstream" ] \
  || die "the built binary reports version '$built_version', expected $upstream"

# --- 9. Install ---------------------------------------------------------------------------------
write() { if [ -w "$(dirname "$PREFIX")" ] || [ -w "$PREFIX" ]; then "$@"; else as_root "$@"; fi; }
write install -d -m 0755 "$PREFIX/bin" "$PREFIX/share/pgbouncer"
write install -m 0755 "$src/pgbouncer" "$PREFIX/bin/pgbouncer"
{
  echo "PgBouncer $built_version built $(date -u +%Y-%m-%dT%H:%M:%SZ) by scripts/install-pgbouncer.sh"
  echo "source package: pgbouncer $version (Debian $SUITE), from $mirror/$directory"
  echo "dists/$SUITE/InRelease: signed by $signers (keyring $KEYRING)"
  echo "main/source/Sources.xz: SHA256 $sources_sha (listed in InRelease)"
  echo "$orig_file: SHA256 $orig_sha (listed in Sources)"
  echo "$deb_file: SHA256 $deb_sha (listed in Sources)"
  echo "Debian patches applied: ${patches[*]:-none}"
  echo "configure: --with-openssl --without-cares --without-pam --without-systemd"
} >"$work/PROVENANCE"
write install -m 0644 "$work/PROVENANCE" "$PREFIX/share/pgbouncer/PROVENANCE"

bin="$PREFIX/bin/pgbouncer"
if ! runnable "$bin"; then
  die "installed $bin, but user '$RUN_AS' (who runs PgBouncer for the tests, as we are root) cannot execute it: a parent folder is not searchable by that user. Run this script with a PREFIX that user can reach, e.g. scripts/install-pgbouncer.sh /usr/local"
fi
log "installed PgBouncer $built_version as $bin in $(($(date +%s) - started))s (build and install)"
echo "$bin"
