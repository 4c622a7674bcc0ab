#!/usr/bin/env bash
# Fails when Rust code sets search_path at session level (DESIGN.md §5): on a pooled
# connection that leaks into the next request. Only `SET LOCAL search_path` and
# `set_config('search_path', …, true)` are allowed.
# A line marked allow-session-search-path (a test demonstrating the leak) is exempt.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
# `SET search_path` / `SET SESSION search_path` not preceded by LOCAL.
if grep -rnIiE "set[[:space:]]+(session[[:space:]]+)?search_path" src tests benches \
    | grep -viE "set[[:space:]]+local[[:space:]]+search_path" | grep -v "allow-session-search-path"; then
  echo "error: session-level SET search_path above; use SET LOCAL inside a transaction" >&2
  status=1
fi
# set_config('search_path', …, false) or with the third argument left out.
if grep -rnIiE "set_config\([[:space:]]*'search_path'[^)]*(,[[:space:]]*false[[:space:]]*\)|'[[:space:]]*\))" src tests benches migrations; then
  echo "error: set_config('search_path', …) must pass is_local = true" >&2
  status=1
fi
exit $status
