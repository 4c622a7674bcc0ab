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
unset DATABASE_URL CLERK_JWKS_URL CLERK_ISSUER STRIPE_WEBHOOK_SECRET CLERK_WEBHOOK_SIGNING_SECRET

# Configuration mistakes fail closed: each of these must stop `serve` before it starts
# anything, naming the setting (docs/security.md).
refuses() { # <setting named in the error> <serve args...>
  local named=$1; shift
  if out=$(timeout 20 "$bin" serve "$@" 2>&1); then
    echo "FAIL serve $* started (or exited 0) instead of refusing"; exit 1
  fi
  grep -q "$named" <<<"$out" || { echo "FAIL serve $* did not name $named: $out"; exit 1; }
  [ ! -e "$CAPLIQUIFY_DATA_DIR" ] || { echo "FAIL serve $* started the embedded cluster"; exit 1; }
  echo "ok   serve $* refuses, naming $named"
}
STRIPE_WEBHOOK_SECRET= refuses STRIPE_WEBHOOK_SECRET --listen 127.0.0.1:0
CLERK_WEBHOOK_SIGNING_SECRET=whsec_ refuses CLERK_WEBHOOK_SIGNING_SECRET --listen 127.0.0.1:0
refuses CLERK_JWKS_URL --no-demo --listen 127.0.0.1:0
refuses CLERK_JWKS_URL --listen 0.0.0.0:0

export CLERK_WEBHOOK_SIGNING_SECRET="whsec_$(head -c 24 /dev/urandom | base64)"
export STRIPE_WEBHOOK_SECRET="whsec_$(head -c 24 /dev/urandom | base64 | tr -d '/+=')"
export CAPLIQUIFY_STRIPE_PRICES="price_accept_pro=professional:monthly,price_accept_ent=enterprise:annual"
export ENCRYPTION_KEY="$(openssl rand -hex 32)"
# Not the demo, so Clerk's keys are required: a JWKS of a key made for this run.
openssl genrsa -out "$work/clerk.pem" 2048 2>/dev/null
node -e 'const c=require("crypto"),fs=require("fs");
  const jwk=c.createPublicKey(fs.readFileSync(process.argv[1])).export({format:"jwk"});
  fs.writeFileSync(process.argv[2], JSON.stringify({keys:[{...jwk,kid:"accept",use:"sig",alg:"RS256"}]}));' \
  "$work/clerk.pem" "$work/jwks.json"
export CLERK_JWKS_URL="file://$work/jwks.json"
export CLERK_ISSUER="https://clerk.acceptance.test"

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

# The embedded cluster serve started is private: a 0700 socket folder, a 0600 password file,
# no TCP listener, and no login without the password (docs/security.md).
data="$CAPLIQUIFY_DATA_DIR"
check_mode() { [ "$(stat -c %a "$1")" = "$2" ] || { echo "FAIL $1 has mode $(stat -c %a "$1"), not $2"; exit 1; }; }
check_mode "$data/sock" 700
check_mode "$data/superuser.password" 600
if PGPASSWORD= psql -X -w -h "$data/sock" -U postgres -d capliquify -tAc 'SELECT 1' >/dev/null 2>&1; then
  echo "FAIL the embedded cluster admitted the superuser without a password"; exit 1
fi
listen=$(PGPASSWORD="$(cat "$data/superuser.password")" psql -X -w -h "$data/sock" -U postgres -d capliquify -tAc 'SHOW listen_addresses')
[ -z "$listen" ] || { echo "FAIL the embedded cluster listens on TCP ($listen)"; exit 1; }
echo "ok   the embedded cluster: socket folder 0700, password file 0600, no TCP, password required"

(cd scripts/webhook-acceptance && npm install --no-package-lock --no-audit --no-fund --silent)
BASE_URL="http://127.0.0.1:$port" CAPLIQUIFY_BIN="$bin" node scripts/webhook-acceptance/run.mjs
