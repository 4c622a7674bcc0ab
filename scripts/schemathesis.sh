#!/usr/bin/env bash
# Schemathesis run against the served OpenAPI document with all its checks: no server error,
# every response as documented, every schema-invalid request refused, every schema-valid one
# accepted (but for the rules JSON Schema cannot state: scripts/schemathesis/hooks.py).
#
# What it does:
#   1. builds the service (`cargo build`, a no-op when it is up to date; skipped when
#      CAPLIQUIFY_BIN points at a built binary);
#   2. makes a Python venv in a temp folder and installs scripts/schemathesis/requirements.txt
#      (schemathesis, pinned, from PyPI);
#   3. starts `capliquify serve` in demo mode (DATABASE_URL unset, so it runs a private
#      PostgreSQL cluster under the temp folder) on a free loopback port, waits for /readyz and
#      takes the ACME owner token from the demo banner;
#   4. runs `schemathesis run http://127.0.0.1:<port>/api/v1/openapi.json` with that token,
#      every phase (coverage, fuzzing, stateful) and `--checks all`, except that the built-in
#      `positive_data_acceptance` is replaced by `positive_data_acceptance_with_rules`
#      (scripts/schemathesis/hooks.py: the same check, allowing only 422
#      reference_not_found / rule_violated / import_rejected and 400 invalid_cursor, by their
#      problem code), and
#      with NUL characters left out of generated strings (PostgreSQL text and jsonb cannot
#      hold one; the field schemas say so where they can); a bounded number of examples per
#      operation and a hard wall-clock limit;
#   5. scans the server's JSON log for any response with status >= 500 or any ERROR line, and
#      prints them (method, uri, request id, error) so they can be matched to schemathesis'
#      reproduction (`curl` command) above;
#   6. stops the server and its cluster and removes the temp folder however the run ends.
#
# Exit status: 0 when schemathesis passed and the server logged no 5xx/ERROR; non-zero
# otherwise (including a run cut off by the time limit).
#
# Run:   scripts/schemathesis.sh
# Needs: cargo, python3 with the venv module (Debian: python3-venv), curl, PostgreSQL's
#        server binaries (as .ci/run installs them), and PyPI reachable.
# Knobs (environment):
#   SCHEMATHESIS_MAX_EXAMPLES  test cases per operation and phase (default 25)
#   SCHEMATHESIS_TIME_LIMIT    hard limit in seconds on the schemathesis run (default 600)
#   SCHEMATHESIS_SEED          seed, to repeat a run exactly (default: random, printed at the end
#                              and again on failure)
#   SCHEMATHESIS_REPORT_DIR    if set, the JUnit/NDJSON reports and the server log are copied here
#   SCHEMATHESIS_VENV          an existing venv to reuse (kept); default: a fresh one, removed
#   CAPLIQUIFY_BIN             a built capliquify binary (skips `cargo build`)
#   Extra arguments are passed to `schemathesis run` (e.g. --include-path-regex products);
#   it runs from the temp folder, so give file paths as absolute paths.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

max_examples="${SCHEMATHESIS_MAX_EXAMPLES:-25}"
time_limit="${SCHEMATHESIS_TIME_LIMIT:-600}"

work="$(mktemp -d "${TMPDIR:-/tmp}/capliquify-schemathesis.XXXXXX")"
# Run as root, the cluster runs as `postgres`, which must be able to enter this folder.
chmod 711 "$work"
data="$work/data"
server=""
bin="${CAPLIQUIFY_BIN:-$root/target/debug/capliquify}"

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
  if [ -n "${SCHEMATHESIS_REPORT_DIR:-}" ]; then
    mkdir -p "$SCHEMATHESIS_REPORT_DIR"
    cp -r "$work/report/." "$SCHEMATHESIS_REPORT_DIR/" 2>/dev/null || true
    cp "$work/serve.log" "$SCHEMATHESIS_REPORT_DIR/serve.log" 2>/dev/null || true
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

if [ -n "${SCHEMATHESIS_VENV:-}" ]; then
  venv="$SCHEMATHESIS_VENV"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
else
  venv="$work/venv"
  python3 -m venv "$venv"
fi
echo "== installing schemathesis ($(grep -E '^schemathesis' scripts/schemathesis/requirements.txt))"
"$venv/bin/pip" install -q --disable-pip-version-check -r scripts/schemathesis/requirements.txt
"$venv/bin/schemathesis" --version

port="$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"

echo "== starting capliquify serve (demo mode) on $base"
unset DATABASE_URL
export CAPLIQUIFY_DATA_DIR="$data"
# stdout: the demo banner with the tokens; stderr: JSON log lines (one per request).
"$bin" serve --listen "127.0.0.1:$port" --log-format json >"$work/serve.out" 2>"$work/serve.log" &
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
token="$(sed -n "s/^ *export TOKEN_ACME='\(.*\)'\$/\1/p" "$work/serve.out" | head -n 1)"
if [ -z "$token" ]; then
  echo "error: no TOKEN_ACME in the server's demo banner:" >&2
  cat "$work/serve.out" >&2
  exit 1
fi

seed="${SCHEMATHESIS_SEED:-$("$venv/bin/python" -c 'import secrets; print(secrets.randbits(128))')}"
echo "== schemathesis run $base/api/v1/openapi.json (checks: all, max $max_examples examples/operation, limit ${time_limit}s, seed $seed)"
started=$SECONDS
set +e
# From the temp folder: schemathesis keeps its crash cache in ./.schemathesis, not in the repo.
(cd "$work" && PYTHONPATH="$root/scripts/schemathesis" SCHEMATHESIS_HOOKS=hooks \
  exec timeout --foreground --signal=INT --kill-after=30 "$time_limit" \
  "$venv/bin/schemathesis" run "$base/api/v1/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks all \
  --exclude-checks positive_data_acceptance \
  --generation-allow-x00 false \
  --max-examples "$max_examples" \
  --request-timeout 30 \
  --generation-database none \
  --no-color \
  --report junit,ndjson --report-dir "$work/report" \
  --seed "$seed" "$@")
st_rc=$?
set -e
echo "== schemathesis finished in $((SECONDS - started))s with exit code $st_rc"
if [ "$st_rc" = 124 ]; then
  echo "error: schemathesis hit the ${time_limit}s limit (SCHEMATHESIS_TIME_LIMIT)" >&2
fi

# Second net, and the server's side of any failure: every 5xx response and ERROR line it logged.
echo "== server log: responses >= 500 and ERROR lines"
set +e
"$venv/bin/python" - "$work/serve.log" <<'PY'
import json, sys
bad = set()
statuses = {}
for raw in open(sys.argv[1], encoding="utf-8", errors="replace"):
    try:
        line = json.loads(raw)
    except ValueError:
        continue
    fields = line.get("fields", {})
    span = line.get("span", {})
    status = fields.get("status")
    if status is not None:
        statuses[int(status)] = statuses.get(int(status), 0) + 1
    if line.get("level") == "ERROR" or (status is not None and int(status) >= 500):
        bad.add(span.get("request_id") or raw)
        shown = f"status={status}" if status is not None else fields.get("error", fields.get("message", ""))
        print(f"{line.get('timestamp')} {line.get('level')} {span.get('method', '?')} "
              f"{span.get('uri', '?')} request_id={span.get('request_id', '?')} {shown}")
print("responses by status:", ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())))
print(f"requests with a server error: {len(bad)}")
sys.exit(1 if bad else 0)
PY
log_rc=$?
set -e

if [ "$st_rc" != 0 ] || [ "$log_rc" != 0 ]; then
  echo "schemathesis: FAILED (schemathesis exit $st_rc, server errors logged: $([ "$log_rc" = 0 ] && echo no || echo yes))"
  echo "schemathesis: repeat with SCHEMATHESIS_SEED=$seed scripts/schemathesis.sh"
  exit 1
fi
echo "schemathesis: all checks passed (seed $seed)"
