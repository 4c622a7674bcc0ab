#!/usr/bin/env bash
# Builds the container image's runtime stage (./Dockerfile) with buildah and starts it:
# the same image a registry-connected machine builds with `docker build .`, except that
# the release binary is built here on the host (`cargo build --release --locked`) and the
# Debian base is made from Debian's packages with debootstrap, because neither the Rust
# image nor a Debian image can be pulled from a registry here.
#
# Then, in the image: `capliquify --version`, the user is not root, the CA roots are there,
# `config check` runs, and `serve` answers /readyz 200 against a PostgreSQL on this
# machine (the binaries' embedded cluster, migrated first). Prints the image size.
#
# Skips (exit 0, with the reason) when buildah or debootstrap cannot be installed or
# buildah cannot run here; fails on anything else. The base is cached under
# target/container (delete it to make a new one).
#
# The image is in Docker format (OCI images drop HEALTHCHECK).
#
# Usage: scripts/container-build.sh          (CI runs it from .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."

skip() {
  echo "SKIP container build: $*"
  exit 0
}
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

IMAGE=localhost/capliquify:ci
BASE_IMAGE=localhost/capliquify-debian-base:bookworm
WORK=target/container
mkdir -p "$WORK"

if ! command -v buildah >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
  echo "== installing buildah and debootstrap"
  as_root apt-get update -q >/dev/null 2>&1 || true
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q buildah debootstrap >/dev/null \
    || skip "buildah and debootstrap could not be installed (apt-get install buildah debootstrap)"
fi
# buildah needs root here (chroot isolation, its own storage); check it runs at all.
if [ "$(id -u)" != 0 ]; then
  skip "buildah with chroot isolation needs root on this machine"
fi
buildah info >/dev/null 2>&1 || skip "buildah is installed but cannot run here: $(buildah info 2>&1 | tail -1)"
BUILDAH=(buildah --storage-driver vfs)

echo "== release binary (cargo build --release --locked)"
cargo build --release --locked --bin capliquify
mkdir -p "$WORK/context"
cp target/release/capliquify "$WORK/context/capliquify"

echo "== Debian bookworm base (debootstrap --variant=minbase, cached in $WORK)"
if [ ! -s "$WORK/debian-bookworm.tar" ]; then
  rm -rf "$WORK/rootfs"
  as_root debootstrap --variant=minbase --include=ca-certificates bookworm "$WORK/rootfs" \
    >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log"; echo "debootstrap failed"; exit 1; }
  # What a slim image leaves out: package lists, caches, logs, documentation.
  rm -rf "$WORK/rootfs"/var/lib/apt/lists/* "$WORK/rootfs"/var/cache/apt/*.bin \
    "$WORK/rootfs"/var/cache/apt/archives/*.deb "$WORK/rootfs"/var/log/* \
    "$WORK/rootfs"/usr/share/doc/* "$WORK/rootfs"/usr/share/man/* \
    "$WORK/rootfs"/usr/share/info/* "$WORK/rootfs"/usr/share/locale/*
  tar -C "$WORK/rootfs" --numeric-owner -cf "$WORK/debian-bookworm.tar" .
  rm -rf "$WORK/rootfs"
fi
if ! "${BUILDAH[@]}" inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
  mkdir -p "$WORK/base"
  ln -f "$WORK/debian-bookworm.tar" "$WORK/base/rootfs.tar" 2>/dev/null \
    || cp "$WORK/debian-bookworm.tar" "$WORK/base/rootfs.tar"
  printf 'FROM scratch\nADD rootfs.tar /\nCMD ["bash"]\n' >"$WORK/base/Dockerfile"
  "${BUILDAH[@]}" build --isolation chroot --quiet -t "$BASE_IMAGE" "$WORK/base" >/dev/null
fi

echo "== image (Dockerfile, runtime stage, binary from the host)"
"${BUILDAH[@]}" build --isolation chroot --layers=false --format docker \
  -f Dockerfile --target runtime \
  --build-arg RUNTIME_IMAGE="$BASE_IMAGE" \
  --build-arg BINARY_FROM=context --build-arg BINARY=capliquify \
  -t "$IMAGE" "$WORK/context"
# The context stage's image is left untagged by each build.
"${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true

CTR=""
PG_DIR=""
SERVE_PID=""
PG_BIN=""
cleanup() {
  if [ -n "$SERVE_PID" ]; then
    pid=$("${BUILDAH[@]}" run --isolation chroot "$CTR" -- cat /tmp/serve.pid 2>/dev/null || true)
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null
    wait "$SERVE_PID" 2>/dev/null || true
  fi
  [ -n "$CTR" ] && "${BUILDAH[@]}" rm "$CTR" >/dev/null 2>&1
  if [ -n "$PG_DIR" ] && [ -d "$PG_DIR/data" ]; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  [ -n "$PG_DIR" ] && rm -rf "$PG_DIR"
  return 0
}
trap cleanup EXIT
CTR=$("${BUILDAH[@]}" from "$IMAGE")
in_image() { "${BUILDAH[@]}" run --isolation chroot "$@"; }

echo "== in the image"
in_image "$CTR" -- capliquify --version
uid=$(in_image "$CTR" -- id -u)
[ "$uid" = 10001 ] || { echo "the image runs as uid $uid, not 10001"; exit 1; }
echo "runs as uid $uid"
in_image "$CTR" -- test -s /etc/ssl/certs/ca-certificates.crt \
  || { echo "the image has no CA roots"; exit 1; }
echo "CA roots present"
# The checks run; a placeholder secret is never printed.
if in_image --env DATABASE_URL=postgres://svc:not-printed@db.example/x?sslmode=disable \
  "$CTR" -- capliquify config check >"$WORK/config-check.txt" 2>>"$WORK/config-check.txt"; then
  echo "config check passed a non-TLS remote URL without keys"; exit 1
fi
grep -q "ERROR DATABASE_URL" "$WORK/config-check.txt" && ! grep -q not-printed "$WORK/config-check.txt" \
  || { cat "$WORK/config-check.txt"; echo "config check output unexpected"; exit 1; }
echo "config check finds the problems"

# serve in the image against a PostgreSQL of this script on this machine (chroot isolation
# shares the host's network), migrated by the host's binary, with an offline JWKS; then
# /readyz from the host.
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$PG_BIN/initdb" ] || { echo "PostgreSQL server binaries not found (apt-get install postgresql)"; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PG_PORT=$(free_port)
# Under the temp folder: the checkout may sit where the postgres user cannot reach.
PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/capliquify-container-pg.XXXXXX")
chown postgres: "$PG_DIR"
as_pg() { runuser -u postgres -- "$@"; }
as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust --no-sync >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w \
  -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
DATABASE_URL="$PG_URL" target/release/capliquify migrate >/dev/null
PORT=$(free_port)
# serve outside the demo needs a JWKS with an RS256 key: one made here, never used to sign.
openssl genrsa -out "$WORK/jwks-key.pem" 2048 2>/dev/null
openssl rsa -in "$WORK/jwks-key.pem" -noout -modulus | cut -d= -f2 | python3 -c '
import base64, json, sys
n = bytes.fromhex(sys.stdin.read().strip())
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
print(json.dumps({"keys": [{"kty": "RSA", "kid": "container-ci", "use": "sig", "alg": "RS256",
                            "n": b64(n), "e": b64(bytes([1, 0, 1]))}]}))' >"$WORK/jwks.json"
rm -f "$WORK/jwks-key.pem"
"${BUILDAH[@]}" copy "$CTR" "$WORK/jwks.json" /tmp/jwks.json >/dev/null
# Stopped by SIGTERM to serve itself (its pid is written in the container; chroot
# isolation shares the host's pid namespace): signalling buildah run does not stop it.
"${BUILDAH[@]}" run --isolation chroot \
  --env DATABASE_URL="$PG_URL" \
  --env ENCRYPTION_KEY="$(openssl rand -hex 32)" \
  --env CLERK_JWKS_URL=file:///tmp/jwks.json \
  --env CLERK_ISSUER=https://clerk.example \
  --env CAPLIQUIFY_LISTEN="127.0.0.1:$PORT" \
  "$CTR" -- sh -c 'capliquify serve & echo $! >/tmp/serve.pid; wait $!' >"$WORK/serve.log" 2>&1 &
SERVE_PID=$!
ready=""
for _ in $(seq 1 60); do
  if out=$(curl -fsS "http://127.0.0.1:$PORT/readyz" 2>/dev/null); then ready=$out; break; fi
  kill -0 "$SERVE_PID" 2>/dev/null || break
  sleep 0.5
done
[ -n "$ready" ] || { tail -20 "$WORK/serve.log"; echo "serve in the image never answered /readyz"; exit 1; }
echo "/readyz from the image: $ready"

echo "== image $IMAGE: $("${BUILDAH[@]}" images --format '{{.Size}}' "$IMAGE" | head -1)" \
  "(base $("${BUILDAH[@]}" images --format '{{.Size}}' "$BASE_IMAGE" | head -1)," \
  "binary $(du -h target/release/capliquify | cut -f1))"
