#!/usr/bin/env bash
# The docs against the binary: runs the README's operations block and the docs' `curl`
# examples against the demo service, so that neither can drift from what `capliquify` does.
#
# What it does:
#   1. builds the binary (`cargo build`; skipped when CAPLIQUIFY_BIN points at one);
#   2. starts `capliquify serve` in demo mode (DATABASE_URL unset: a private PostgreSQL
#      cluster in a temp folder) on a free loopback port with an admin token, waits for
#      /readyz and reads the demo banner's tokens (one per role);
#   3. runs every command of the README's ```sh block under "## Operations", in order, on the
#      same cluster, from the temp folder (files they write land there) — except the few
#      listed in SKIP below, each with its reason;
#   4. runs every one-line `curl` example of docs/*.md and of the demo banner against the
#      service (the docs' 127.0.0.1:8080 replaced by the real address), failing on an HTTP error;
#   5. runs docs/domain.md's worked example (its ```sh block, which sets the variables its
#      multi-line `curl` calls use) as one script, failing on the first HTTP error;
#   6. runs docs/import.md's walkthrough (its ```sh block) as one script from the repository's
#      root, where its sample files are, failing on any answer but 2xx and the 422 it shows,
#      then its command-line examples (`capliquify import …`) on the same cluster;
#   7. checks that the banner's viewer token reads but cannot write;
#   8. stops the server and its cluster and removes the temp folder however the run ends.
#
# Exit status: 0 when every command and example succeeded, 1 otherwise (each failure is
# printed with its output).
#
# Run:   scripts/docs-check.sh
# Needs: cargo, curl (7.76+), python3 (to pick a free port), PostgreSQL's server binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
bin="${CAPLIQUIFY_BIN:-$root/target/debug/capliquify}"

# README commands not run here: what they need cannot be had against one demo service.
SKIP=(
  "capliquify tenant purge acme"    # irreversible, and refused for a live tenant by design (tests/it/lifecycle.rs)
  "capliquify tenant move acme --to eu2"  # needs a second PostgreSQL cluster (tests/it/placement.rs)
  "capliquify tenant move acme --to-worker 10.0.0.13:5432"  # needs Citus workers (scripts/citus-acceptance.sh)
  "capliquify cluster add-worker 10.0.0.13:5432"  # needs Citus (scripts/citus-acceptance.sh)
  "capliquify cluster status"       # needs Citus (scripts/citus-acceptance.sh)
  "capliquify cluster tenants"      # needs Citus (scripts/citus-acceptance.sh)
  "capliquify cluster rebalance"    # needs Citus (scripts/citus-acceptance.sh)
  "capliquify cluster drain 10.0.0.12:5432"  # needs Citus (scripts/citus-acceptance.sh)
  "capliquify import sentia --source-url postgres://reader@old-db/sentia --tenant acme --currency GBP --dry-run"  # needs a Sentia database (tests/it/sentia.rs)
)

work="$(mktemp -d "${TMPDIR:-/tmp}/capliquify-docs-check.XXXXXX")"
# Run as root, the cluster runs as `postgres`, which must be able to enter this folder.
chmod 711 "$work"
data="$work/data"
server=""

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
    kill -TERM "$server" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$server" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  if [ -x "$bin" ]; then
    "$bin" --data-dir "$data" db stop >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ -z "${CAPLIQUIFY_BIN:-}" ]; then
  echo "== cargo build"
  cargo build -q
fi

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
unset DATABASE_URL CLERK_JWKS_URL CLERK_ISSUER
export CAPLIQUIFY_DATA_DIR="$data"
CAPLIQUIFY_ADMIN_TOKEN="docs-check-$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
export CAPLIQUIFY_ADMIN_TOKEN
# Backups are signed as the README's operations assume (an unsigned archive is refused).
CAPLIQUIFY_BACKUP_KEY="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
export CAPLIQUIFY_BACKUP_KEY

echo "== starting capliquify serve (demo mode) on $base"
"$bin" serve --listen "127.0.0.1:$port" >"$work/serve.out" 2>"$work/serve.log" &
server=$!
ready=""
for _ in $(seq 1 240); do
  if curl -fsS "$base/readyz" >/dev/null 2>&1; then ready=1; break; fi
  if ! kill -0 "$server" 2>/dev/null; then break; fi
  sleep 0.5
done
if [ -z "$ready" ]; then
  echo "error: the server did not become ready; its output:" >&2
  cat "$work/serve.out" "$work/serve.log" >&2
  exit 1
fi
# The banner's `export TOKEN_…='…'` lines, as printed for people to paste.
eval "$(grep -E "^ *export TOKEN_[A-Z_]+='[^']+'$" "$work/serve.out")"
for var in TOKEN_ACME TOKEN_ACME_ADMIN TOKEN_ACME_MEMBER TOKEN_ACME_VIEWER TOKEN_BETA_VIEWER; do
  if [ -z "${!var:-}" ]; then
    echo "error: the demo banner has no $var:" >&2
    cat "$work/serve.out" >&2
    exit 1
  fi
done

# The first ```sh block after the heading "## HEADING" of FILE: sh_block FILE HEADING.
sh_block() {
  awk -v heading="## $2" '
    index($0, heading) == 1 { section = 1; next }
    section && /^```sh/ { inside = 1; next }
    inside && /^```/ { exit }
    inside { print }
  ' "$1"
}

failures=0
# Runs one documented command line; prints it, and its output when it fails.
check() {
  local shown="$1" line="$2"
  if (cd "$work" && eval "$line") >"$work/out" 2>&1; then
    echo "ok    $shown"
  else
    local rc=$?
    echo "FAIL  $shown   (exit $rc)"
    sed 's/^/      /' "$work/out"
    failures=$((failures + 1))
  fi
}

echo "== README.md, ## Operations"
# The first ```sh block after the heading.
mapfile -t commands < <(sh_block README.md "Operations")
if [ "${#commands[@]}" -lt 10 ]; then
  echo "error: found ${#commands[@]} commands in README.md's operations block" >&2
  exit 1
fi
capliquify() { "$bin" --data-dir "$data" "$@"; }
for raw in "${commands[@]}"; do
  # Drop the trailing comment (whitespace, then `# `).
  line="$(sed -E 's/[[:space:]]+# .*$//' <<<"$raw")"
  [ -z "${line// /}" ] && continue
  skipped=""
  for skip in "${SKIP[@]}"; do
    [ "$line" = "$skip" ] && skipped=1
  done
  if [ -n "$skipped" ]; then
    echo "skip  $line"
    continue
  fi
  check "$line" "$line"
done

echo "== curl examples of docs/*.md and of the demo banner"
# --fail-with-body: an HTTP error fails the example (and shows the problem document).
curl() { command curl --fail-with-body -sS "$@"; }
# One-line examples only: a line ending in `\\` or using the worked example's variables
# belongs to docs/domain.md's script, run whole below.
mapfile -t examples < <(
  grep -hE '^ *curl ' docs/*.md "$work/serve.out" | grep -vE '\\$|\$(H|API|COMPANY|ID)\b'
)
if [ "${#examples[@]}" -lt 3 ]; then
  echo "error: found only ${#examples[@]} curl examples" >&2
  exit 1
fi
for raw in "${examples[@]}"; do
  line="${raw//http:\/\/127.0.0.1:8080/$base}"
  check "$raw" "$line"
done

echo "== docs/domain.md, ## Worked example (one script)"
sh_block docs/domain.md "Worked example" >"$work/worked-example.sh"
if [ "$(grep -c '^ *curl \|\$(curl ' "$work/worked-example.sh")" -lt 4 ]; then
  echo "error: docs/domain.md's worked example was not found" >&2
  exit 1
fi
sed -i "s#http://127.0.0.1:8080#$base#g" "$work/worked-example.sh"
# `curl` (the function above) fails on an HTTP error, and pipefail carries it out of each pipe.
check "docs/domain.md worked example ($(wc -l <"$work/worked-example.sh") lines)" \
  "set -euo pipefail; source '$work/worked-example.sh'"

echo "== docs/import.md, ## Walkthrough (one script, from the repository's root)"
sh_block docs/import.md "Walkthrough" >"$work/import-walkthrough.sh"
if [ "$(grep -c '^ *curl ' "$work/import-walkthrough.sh")" -lt 8 ]; then
  echo "error: docs/import.md's walkthrough was not found" >&2
  exit 1
fi
sed -i "s#http://127.0.0.1:8080#$base#g" "$work/import-walkthrough.sh"
# The walkthrough shows a refused file on purpose: there an answer fails unless it is 2xx or
# the 422 it shows. Its sample files' paths are relative to the repository's root.
walkthrough_curl() {
  local out code
  out="$(command curl -sS -w '\n%{http_code}' "$@")" || return 1
  code="$(tail -n 1 <<<"$out")"
  sed '$d' <<<"$out"
  case "$code" in 2??|422) ;; *) echo "HTTP $code" >&2; return 1 ;; esac
}
check "docs/import.md walkthrough ($(wc -l <"$work/import-walkthrough.sh") lines)" \
  "cd '$root'; curl() { walkthrough_curl \"\$@\"; }; set -euo pipefail; source '$work/import-walkthrough.sh'"

echo "== docs/import.md, ## The command line (from the repository's root)"
mapfile -t import_commands < <(sh_block docs/import.md "The command line")
if [ "${#import_commands[@]}" -lt 1 ]; then
  echo "error: docs/import.md's command-line examples were not found" >&2
  exit 1
fi
for line in "${import_commands[@]}"; do
  check "$line" "cd '$root' && $line"
done

echo "== the demo's viewer token reads and cannot write"
check "viewer GET /api/v1/products" "curl -H \"Authorization: Bearer \$TOKEN_ACME_VIEWER\" $base/api/v1/products"
viewer_post="$(command curl -s -o /dev/null -w '%{http_code}' -X POST \
  -H "Authorization: Bearer $TOKEN_ACME_VIEWER" -H 'content-type: application/json' \
  -d '{"name":"Nope"}' "$base/api/v1/companies")"
if [ "$viewer_post" = 403 ]; then
  echo "ok    viewer POST /api/v1/companies is 403"
else
  echo "FAIL  viewer POST /api/v1/companies answered $viewer_post, not 403"
  failures=$((failures + 1))
fi

if [ "$failures" != 0 ]; then
  echo "docs-check: $failures FAILED"
  exit 1
fi
echo "docs-check: every documented command and example works"
