#!/usr/bin/env bash
# Webhook acceptance test: starts `capliquify serve` on a private embedded cluster, sends it
# Clerk and Stripe events signed by the providers' own libraries (svix, stripe from npm;
# see webhook-acceptance/run.mjs), and checks the outcomes and the tenant state.
# Needs node and npm; run by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build -q
bin="$PWD/target/debug/capliquify"
work="${TMPDIR:-/tmp}/capliquify-webhook-acceptance-$$"
mkdir -p "$work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

export CAPLIQUIFY_DATA_DIR="$work/data"
export CLERK_WEBHOOK_SIGNING_SECRET="whsec_$(head -c 24 /dev/urandom | base64)"
export STRIPE_WEBHOOK_SECRET="whsec_$(head -c 24 /dev/urandom | base64 | tr -d '/+=')"
export CAPLIQUIFY_STRIPE_PRICES="price_accept_pro=professional:monthly,price_accept_ent=enterprise:annual"
unset DATABASE_URL

"$bin" serve --no-demo --listen "127.0.0.1:$port" >"$work/serve.log" 2>&1 &
server=$!
cleanup() {
  kill -TERM "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  "$bin" db stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { cat "$work/serve.log"; exit 1; }
  sleep 0.2
done

(cd scripts/webhook-acceptance && npm install --no-package-lock --no-audit --no-fund --silent)
BASE_URL="http://127.0.0.1:$port" CAPLIQUIFY_BIN="$bin" node scripts/webhook-acceptance/run.mjs
