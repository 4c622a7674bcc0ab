#!/usr/bin/env bash
# Citus acceptance test (issue 17, docs/scaling.md "Citus mode"): three PostgreSQL servers on
# 127.0.0.1 — a coordinator and two workers — with Citus built from the vendored tarball
# (scripts/install-citus.sh); `capliquify migrate`, `db init-roles` and `serve` against the
# coordinator; tenants provisioned by the CLI and by signed Clerk webhooks; then checks, with
# psql on each node, that every tenant table is distributed, that tenants land on both
# workers and that each tenant's rows are on the worker that holds it and nowhere else; that
# the API keeps tenants apart and that hostile SQL as a tenant's role is refused; that a
# write and its audit row commit together (two-phase) even when the worker is killed.
#
#   scripts/citus-acceptance.sh
#
# Needs PostgreSQL 15's server binaries, node/npm (the Clerk signatures, as
# webhook-acceptance.sh) and Citus: the script runs install-citus.sh, and skips (exit 0,
# saying why) only when Citus cannot be built here (no tarball, or the build fails for want
# of its dependencies). Run by .ci/run; about two minutes once built.
set -euo pipefail
cd "$(dirname "$0")/.."

skip() {
  echo "SKIP citus acceptance: $*"
  exit 0
}
fail() {
  echo "FAIL $*"
  exit 1
}
ok() { echo "ok   $*"; }

tarball="${CAPLIQUIFY_CITUS_TARBALL:-$PWD/../shared/vendor/citus-13.2.2.tar.gz}"
[ -f "$tarball" ] || skip "the Citus source tarball is not at $tarball (set CAPLIQUIFY_CITUS_TARBALL)"
if ! lib="$(scripts/install-citus.sh "$tarball" 2>"${TMPDIR:-/tmp}/citus-install.$$.log")"; then
  tail -5 "${TMPDIR:-/tmp}/citus-install.$$.log"
  rm -f "${TMPDIR:-/tmp}/citus-install.$$.log"
  skip "Citus could not be built here (scripts/install-citus.sh failed, above)"
fi
rm -f "${TMPDIR:-/tmp}/citus-install.$$.log"
bindir="$(dirname "$(dirname "$lib")")/bin"
[ -x "$bindir/postgres" ] || fail "no PostgreSQL server binaries next to $lib"

cargo build -q
bin="$PWD/target/debug/capliquify"
work="$(mktemp -d "${TMPDIR:-/tmp}/capliquify-citus-acceptance.XXXXXX")"
chmod 755 "$work"

# PostgreSQL refuses to run as root: then the servers run as postgres (or nobody).
run_as=()
if [ "$(id -u)" = 0 ]; then
  user=postgres
  id "$user" >/dev/null 2>&1 || user=nobody
  run_as=(runuser -u "$user" --)
  chown "$user" "$work"
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
coord=$(free_port)
w1=$(free_port)
w2=$(free_port)
api=$(free_port)
server=""

cleanup() {
  if [ -n "$server" ]; then
    kill -TERM "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  for p in "$coord" "$w1" "$w2"; do
    [ -f "$work/n$p/postmaster.pid" ] && "${run_as[@]}" "$bindir/pg_ctl" -D "$work/n$p" -m immediate stop >/dev/null 2>&1 || true
  done
  if [ "${KEEP_WORK:-}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# pg_hba: the superuser (Citus's own connections) by loopback trust, as a test cluster may;
# tenant roles may never log in to the coordinator, and to the workers only with the
# password the coordinator keeps for them (pg_dist_authinfo); the service's login may log in
# to the coordinator and, with its password, to the workers (docs/scaling.md). The service's
# line comes first: it is a member of every tenant role, so `+capliquify_tenant` matches it.
start_node() { # <port> <role: coordinator|worker>
  local port=$1 kind=$2 data="$work/n$1"
  "${run_as[@]}" "$bindir/initdb" -D "$data" -U postgres --auth=trust --no-sync -E UTF8 >/dev/null
  cat >>"$data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$work'
shared_preload_libraries = 'citus, pg_stat_statements'
wal_level = logical
max_prepared_transactions = 100
max_connections = 300
fsync = off
citus.stat_tenants_track = 'all'
EOF
  if [ "$kind" = coordinator ]; then
    cat >"$data/pg_hba.conf" <<EOF
local all all trust
host all postgres 127.0.0.1/32 trust
host all capliquify_app 127.0.0.1/32 scram-sha-256
host all +capliquify_tenant 127.0.0.1/32 reject
host all all 127.0.0.1/32 scram-sha-256
EOF
  else
    cat >"$data/pg_hba.conf" <<EOF
local all all trust
host all postgres 127.0.0.1/32 trust
host all capliquify_app 127.0.0.1/32 scram-sha-256
host all +capliquify_tenant 127.0.0.1/32 scram-sha-256
host all all 127.0.0.1/32 reject
EOF
  fi
  "${run_as[@]}" "$bindir/pg_ctl" -D "$data" -l "$work/n$port.log" -w start >/dev/null
  psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -c "CREATE DATABASE capliquify"
  psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d capliquify -c "CREATE EXTENSION citus"
}
q() { # <port> <sql>: one value
  psql -X -qAt -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$1" -U postgres -d capliquify -c "$2"
}
q_stdin() { # <port>, the SQL on stdin (for statements too long for one argument)
  psql -X -qAt -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$1" -U postgres -d capliquify -f -
}

started=$(date +%s)
start_node "$coord" coordinator
start_node "$w1" worker
start_node "$w2" worker
q "$coord" "SELECT citus_set_coordinator_host('127.0.0.1', $coord)" >/dev/null
q "$coord" "SELECT citus_add_node('127.0.0.1', $w1)" >/dev/null
q "$coord" "SELECT citus_add_node('127.0.0.1', $w2)" >/dev/null
ok "coordinator :$coord, workers :$w1 and :$w2 (Citus $(q "$coord" "SELECT extversion FROM pg_extension WHERE extname = 'citus'"))"

# Citus turns on TLS with a self-signed X.509 v1 certificate, which capliquify's TLS stack
# refuses; the test's connections stay on loopback without TLS.
export DATABASE_URL="postgres://postgres@127.0.0.1:$coord/capliquify?sslmode=disable"
unset CAPLIQUIFY_CLUSTERS CAPLIQUIFY_DATA_DIR
"$bin" migrate >"$work/migrate.log" 2>&1 || { cat "$work/migrate.log"; fail "capliquify migrate"; }
app_password="$(openssl rand -hex 24)"
CAPLIQUIFY_APP_PASSWORD="$app_password" "$bin" db init-roles >/dev/null
ok "capliquify migrate and db init-roles on the coordinator"
[ "$(q "$coord" "SELECT count(*) FROM pg_dist_partition WHERE logicalrelid = 'public.audit_logs'::regclass")" = 1 ] ||
  fail "public.audit_logs is not in Citus's metadata (migrate's Citus step)"
ok "public.audit_logs is a Citus local table (audit rows commit with two-phase commit)"
doctor="$("$bin" doctor 2>&1 || true)"
grep -q "citus mode.*on: Citus 13.2" <<<"$doctor" || fail "doctor shows no Citus mode: $doctor"
ok "doctor: $(grep 'citus mode' <<<"$doctor" | tr -s ' ')"

# The service, as the least-privileged login, with Clerk keys made for this run.
export CLERK_WEBHOOK_SIGNING_SECRET="whsec_$(head -c 24 /dev/urandom | base64)"
export ENCRYPTION_KEY="$(openssl rand -hex 32)"
openssl genrsa -out "$work/clerk.pem" 2048 2>/dev/null
node -e 'const c=require("crypto"),fs=require("fs");
  const jwk=c.createPublicKey(fs.readFileSync(process.argv[1])).export({format:"jwk"});
  fs.writeFileSync(process.argv[2], JSON.stringify({keys:[{...jwk,kid:"citus",use:"sig",alg:"RS256"}]}));' \
  "$work/clerk.pem" "$work/jwks.json"
export CLERK_JWKS_URL="file://$work/jwks.json"
export CLERK_ISSUER="https://clerk.citus-acceptance.test"
# No schema pool here, so every tenant schema the checks below count is a tenant's (a pooled
# schema is placed on a worker when it is made: tests/it/citus.rs).
DATABASE_URL="postgres://capliquify_app:$app_password@127.0.0.1:$coord/capliquify?sslmode=disable" \
  CAPLIQUIFY_SCHEMA_POOL_SIZE=0 \
  "$bin" serve --no-demo --listen "127.0.0.1:$api" >"$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 1 150); do
  curl -fsS "http://127.0.0.1:$api/readyz" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { cat "$work/serve.log"; fail "serve exited"; }
  sleep 0.2
done
ok "serve (as capliquify_app) on :$api"

# Tenants: two by the CLI, four by signed Clerk webhooks (with an admin member each).
for i in 1 2; do
  "$bin" tenant create --slug "cli-$i" --name "CLI $i" --tier professional --clerk-org "org_cli_$i" >/dev/null
done
(cd scripts/citus-acceptance && npm install --no-package-lock --no-audit --no-fund --silent)
export BASE_URL="http://127.0.0.1:$api" CAPLIQUIFY_BIN="$bin" CLERK_KEY="$work/clerk.pem"
export CITUS_COORDINATOR="$coord" CITUS_WORKERS="$w1,$w2"
node scripts/citus-acceptance/run.mjs provision
# Webhook tenants start as starter trials; scenarios (audited writes) need professional.
for i in 1 2 3 4; do "$bin" tenant set-tier "hook-$i" --tier professional >/dev/null; done
ok "6 tenants provisioned (2 by the CLI, 4 by Clerk webhooks)"

# Every tenant schema distributed, every table of it too, on both workers between them.
tenants=$(q "$coord" "SELECT count(*) FROM public.tenants")
schemas=$(q "$coord" "SELECT count(*) FROM citus_schemas WHERE schema_name::text LIKE 'tenant\_%'")
[ "$tenants" = 6 ] && [ "$schemas" = 6 ] || fail "$tenants tenants, $schemas distributed tenant schemas"
local_tables=$(q "$coord" "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname LIKE 'tenant\_%' AND c.relkind IN ('r', 'p')
    AND NOT EXISTS (SELECT 1 FROM pg_dist_partition p WHERE p.logicalrelid = c.oid)")
dist_tables=$(q "$coord" "SELECT count(*) FROM pg_dist_partition WHERE logicalrelid::text LIKE 'tenant\_%.%'")
[ "$local_tables" = 0 ] && [ "$dist_tables" -gt 0 ] || fail "$local_tables tenant tables left on the coordinator ($dist_tables distributed)"
ok "every tenant schema in citus_schemas, all $dist_tables tenant tables in pg_dist_partition"
per_worker=$(q "$coord" "SELECT string_agg(nodeport || ':' || n, ' ' ORDER BY nodeport) FROM (
  SELECT nodeport, count(DISTINCT table_name::text::regclass::oid::regclass::text) AS n FROM citus_shards
   WHERE citus_table_type = 'schema' GROUP BY nodeport) s")
placed_on=$(q "$coord" "SELECT count(DISTINCT nodeport) FROM citus_shards WHERE citus_table_type = 'schema'")
[ "$placed_on" = 2 ] || fail "tenant tables are on $placed_on worker(s) ($per_worker)"
ok "tenants on both workers (tables per worker port: $per_worker)"

# The API writes each tenant's rows (node), then: on the worker holding the tenant, its
# shard holds them; the other worker has no shard of it; the coordinator's table is empty.
node scripts/citus-acceptance/run.mjs write
while IFS='|' read -r slug schema; do
  expected=$(q "$coord" "SELECT count(*) FROM $schema.products")
  [ "$expected" -gt 0 ] || fail "$slug: no products through the coordinator"
  read -r shard port <<<"$(q "$coord" "SELECT shardid, nodeport FROM citus_shards WHERE table_name = '$schema.products'::regclass" | tr '|' ' ')"
  other=$w1
  [ "$port" = "$w1" ] && other=$w2
  on_worker=$(psql -X -qAt -h 127.0.0.1 -p "$port" -U postgres -d capliquify -c "SET citus.override_table_visibility = off; SELECT count(*) FROM $schema.products_$shard" | tail -1)
  elsewhere=$(q "$other" "SELECT to_regclass('$schema.products_$shard') IS NOT NULL")
  coordinator_bytes=$(q "$coord" "SELECT pg_relation_size('$schema.products')")
  [ "$on_worker" = "$expected" ] || fail "$slug: $on_worker of $expected products in shard $shard on :$port"
  [ "$elsewhere" = f ] || fail "$slug: shard $shard also on :$other"
  [ "$coordinator_bytes" = 0 ] || fail "$slug: the coordinator's $schema.products holds $coordinator_bytes bytes"
done < <(q "$coord" "SELECT slug, schema_name FROM public.tenants ORDER BY slug")
ok "each tenant's rows are in its shard on its worker, not on the other worker, not on the coordinator"

# monitor slow-queries: the coordinator's pg_stat_statements has each tenant's statements
# (run there as its role, routed to its worker), with their time.
slow=$("$bin" monitor slow-queries --tenant hook-4 --json)
node -e 'const rows=JSON.parse(process.argv[1]);
  if (!rows.length || rows.some(r=>r.tenant!=="hook-4") || !rows.some(r=>/sales/.test(r.query) && r.calls>0 && r.total_ms>0)) {
    console.log(process.argv[1]); process.exit(1) }' "$slow" || fail "monitor slow-queries shows no statement of hook-4"
ok "monitor slow-queries lists hook-4's statements (the coordinator's pg_stat_statements)"

# Isolation through the API (each tenant reads only its own rows, concurrently) and the
# trail: every write has its audit row.
node scripts/citus-acceptance/run.mjs isolation

# Hostile SQL as a tenant's role (what an injected statement could do), on the coordinator.
a=$(q "$coord" "SELECT schema_name FROM public.tenants WHERE slug = 'cli-1'")
b=$(q "$coord" "SELECT schema_name FROM public.tenants WHERE slug = 'cli-2'")
role_a=$(q "$coord" "SELECT public.tenant_role_name(id) FROM public.tenants WHERE slug = 'cli-1'")
id_b=$(q "$coord" "SELECT id FROM public.tenants WHERE slug = 'cli-2'")
hostile() { # <name> <sql>: must fail with permission denied / policy violation
  local out
  if out=$(psql -X -qAt -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$coord" -U postgres -d capliquify \
    -c "BEGIN; SET LOCAL search_path TO $a; SET LOCAL ROLE $role_a; $2; COMMIT" 2>&1); then
    fail "hostile SQL was allowed: $1 ($out)"
  fi
  grep -qE "permission denied|row-level security|not permitted" <<<"$out" || fail "$1 failed otherwise: $out"
  ok "refused as a tenant's role: $1"
}
hostile "read another tenant's table" "SELECT count(*) FROM $b.products"
hostile "write another tenant's table" "INSERT INTO $b.companies (name, currency) VALUES ('x', 'EUR')"
hostile "read the registry" "SELECT count(*) FROM public.tenants"
hostile "read the audit trail" "SELECT count(*) FROM public.audit_logs"
hostile "forge another tenant's audit row" "INSERT INTO public.audit_logs (tenant_id, action) VALUES ('$id_b', 'forged')"
hostile "read Citus's worker passwords" "SELECT * FROM pg_dist_authinfo"
own=$(psql -X -qAt -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$coord" -U postgres -d capliquify \
  -c "BEGIN; SET LOCAL search_path TO $a; SET LOCAL ROLE $role_a; SELECT count(*) FROM products; COMMIT" | sed -n 1p)
[ "$own" -gt 0 ] || fail "the tenant's role cannot read its own products on its worker"
ok "a tenant's role reads its own rows on its worker ($own products)"
if PGPASSWORD=x psql -X -w -h 127.0.0.1 -p "$coord" -U "$role_a" -d capliquify -c 'SELECT 1' >/dev/null 2>&1; then
  fail "a tenant role logged in to the coordinator"
fi
if PGPASSWORD=x psql -X -w -h 127.0.0.1 -p "$w1" -U "$role_a" -d capliquify -c 'SELECT 1' >/dev/null 2>&1; then
  fail "a tenant role logged in to a worker without its password"
fi
[ "$(q "$coord" "SELECT rolcanlogin FROM pg_roles WHERE rolname = '$role_a'")" = f ] || fail "$role_a may log in on the coordinator"
[ "$(q "$w1" "SELECT rolcanlogin FROM pg_roles WHERE rolname = '$role_a'")" = t ] || fail "$role_a may not log in on the workers"
ok "tenant roles: NOLOGIN on the coordinator, LOGIN on the workers with a password only the coordinator has"
isolation=$(q "$coord" "SELECT count(*) FROM public.verify_tenant_isolation() WHERE result NOT IN ('PASS', 'INFO')" 2>&1) ||
  fail "verify_tenant_isolation(): $isolation"
[ "$isolation" = 0 ] || fail "verify_tenant_isolation() reports $isolation problem(s)"
ok "verify_tenant_isolation() passes"

# No act without its audit row. The act (a scenario, on cli-1's worker) and its audit row
# (coordinator) in one transaction, as the API writes them: Citus commits them with
# two-phase commit (PREPARE on the worker, the decision in the coordinator's commit); and
# when the worker is killed before the commit, neither exists afterwards.
worker_a=$(q "$coord" "SELECT nodeport FROM citus_shards WHERE table_name = '$a.scenarios'::regclass")
id_a=$(q "$coord" "SELECT id FROM public.tenants WHERE slug = 'cli-1'")
company_a=$(q "$coord" "SELECT id FROM $a.companies LIMIT 1")
act() { # <scenario name> [seconds to wait before COMMIT]
  psql -X -qAt -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$coord" -U postgres -d capliquify 2>&1 <<SQL
SET citus.log_remote_commands = on;
BEGIN;
SET LOCAL search_path TO $a;
SET LOCAL ROLE $role_a;
INSERT INTO scenarios (company_id, name, parameters) VALUES ('$company_a', '$1', '{}');
INSERT INTO public.audit_logs (tenant_id, action, resource_type, resource_id) VALUES ('$id_a', 'scenario.created', 'scenario', '$1');
SELECT pg_sleep(${2:-0});
COMMIT;
SQL
}
count_both() { # <scenario name>: "<scenarios> <audit rows>"
  echo "$(q "$coord" "SELECT count(*) FROM $a.scenarios WHERE name = '$1'") $(q "$coord" "SELECT count(*) FROM public.audit_logs WHERE resource_id = '$1'")"
}
out=$(act committed)
grep -q "PREPARE TRANSACTION" <<<"$out" && grep -q "COMMIT PREPARED" <<<"$out" ||
  fail "the act and its audit row did not commit with two-phase commit: $out"
[ "$(count_both committed)" = "1 1" ] || fail "committed act: $(count_both committed) (scenarios, audit rows)"
ok "an act on a worker and its audit row on the coordinator commit together (PREPARE TRANSACTION, then COMMIT PREPARED)"
act killed 4 >"$work/killed.out" 2>&1 &
actor=$!
sleep 1.5
"${run_as[@]}" "$bindir/pg_ctl" -D "$work/n$worker_a" -m immediate stop >/dev/null
if wait "$actor"; then fail "the act committed although its worker was killed: $(cat "$work/killed.out")"; fi
"${run_as[@]}" "$bindir/pg_ctl" -D "$work/n$worker_a" -l "$work/n$worker_a.log" -w start >/dev/null
[ "$(count_both killed)" = "0 0" ] || fail "worker killed before the commit: $(count_both killed) (scenarios, audit rows)"
ok "worker :$worker_a killed before the commit: neither the act nor its audit row exists"

# Lifecycle acts in Citus mode: suspend and reactivate (the API's refusal, the data left on
# its worker), backup, restore --replace, clone, purge, and the restore of a purged tenant.
# Each restored or cloned schema must be distributed again with its rows in its shard on its
# worker (and nowhere else), with the per-table sums it had; each purge must leave nothing —
# schema, shards, role, worker password — on any node.
export CAPLIQUIFY_BACKUP_KEY="$(openssl rand -hex 32)"
tenant_sums() { # <schema>: each table (but the migration history) as count:order-independent md5 sum
  q "$coord" "SELECT string_agg(format('%s=%s', c.relname, (xpath('/row/c/text()', query_to_xml(
      format('SELECT count(*) || '':'' || coalesce(sum((''x'' || left(md5(t::text), 15))::bit(60)::bigint), 0) AS c FROM %I.%I t', n.nspname, c.relname),
      false, true, '')))[1]::text), ' ' ORDER BY c.relname)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE n.nspname = '$1' AND c.relkind = 'r' AND c.relname <> 'schema_migrations'"
}
on_its_worker() { # <schema>: distributed whole, on one worker, its rows in its shards there only; sets $placed_on to the port
  local s=$1 table shard port other expected on_worker
  [ "$(q "$coord" "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = '$s' AND c.relkind IN ('r', 'p')
          AND NOT EXISTS (SELECT 1 FROM pg_dist_partition p WHERE p.logicalrelid = c.oid)")" = 0 ] ||
    fail "$s: tables left on the coordinator"
  [ "$(q "$coord" "SELECT count(DISTINCT nodeport) FROM citus_shards WHERE table_name::text LIKE '$s.%'")" = 1 ] ||
    fail "$s: its tables are not on exactly one worker"
  for table in companies products sales; do
    read -r shard port <<<"$(q "$coord" "SELECT shardid, nodeport FROM citus_shards WHERE table_name = '$s.$table'::regclass" | tr '|' ' ')"
    other=$w1
    [ "$port" = "$w1" ] && other=$w2
    expected=$(q "$coord" "SELECT count(*) FROM $s.$table")
    on_worker=$(psql -X -qAt -h 127.0.0.1 -p "$port" -U postgres -d capliquify -c "SET citus.override_table_visibility = off; SELECT count(*) FROM $s.${table}_$shard" | tail -1)
    [ "$on_worker" = "$expected" ] || fail "$s.$table: $on_worker of $expected rows in shard $shard on :$port"
    [ "$(q "$other" "SELECT to_regclass('$s.${table}_$shard') IS NOT NULL")" = f ] || fail "$s.$table: shard also on :$other"
    [ "$(q "$coord" "SELECT pg_relation_size('$s.$table')")" = 0 ] || fail "$s.$table: rows in the coordinator's shell"
  done
  placed_on=$port
}
traces() { # <port> <schema> <role>: schemas, roles, relations of the schema, worker passwords, Citus schema entries
  q "$1" "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = '$2') || ' ' ||
                 (SELECT count(*) FROM pg_roles WHERE rolname = '$3') || ' ' ||
                 (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = '$2') || ' ' ||
                 (SELECT count(*) FROM pg_dist_authinfo WHERE rolename = '$3') || ' ' ||
                 (SELECT count(*) FROM pg_dist_schema d JOIN pg_namespace n ON n.oid = d.schemaid WHERE n.nspname = '$2')"
}
gone_everywhere() { # <slug> <schema> <role>
  for port in "$coord" "$w1" "$w2"; do
    [ "$(traces "$port" "$2" "$3")" = "0 0 0 0 0" ] ||
      fail "$1 purged, but :$port still has (schemas roles relations passwords dist-schemas) $(traces "$port" "$2" "$3")"
  done
  [ "$(q "$coord" "SELECT count(*) FROM citus_shards WHERE table_name::text LIKE '$2.%'")" = 0 ] || fail "$1 purged, shards remain"
  [ "$(q "$coord" "SELECT count(*) FROM public.audit_logs WHERE action = 'tenant.purged' AND resource_id = '$1'")" -ge 1 ] ||
    fail "$1's purge has no audit row"
}
no_build_schemas() {
  for port in "$coord" "$w1" "$w2"; do
    [ "$(q "$port" "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'tenant\_r%'")" = 0 ] || fail "a restore's build schema is left on :$port"
  done
}
schema_of() { q "$coord" "SELECT schema_name FROM public.tenants WHERE slug = '$1'"; }
role_of() { q "$coord" "SELECT public.tenant_role_name(id) FROM public.tenants WHERE slug = '$1'"; }

# Suspend: the API refuses the tenant (403 tenant_suspended, docs/api.md) within the
# service's caller cache (2 s); its data stays on its worker; reactivate lets it back in.
s2=$(schema_of hook-2)
sums2=$(tenant_sums "$s2")
"$bin" tenant suspend hook-2 --reason "citus acceptance" >/dev/null
sleep 2.5
EXPECT_SLUG=hook-2 EXPECT_STATUS=403 EXPECT_CODE=tenant_suspended node scripts/citus-acceptance/run.mjs expect
[ "$(tenant_sums "$s2")" = "$sums2" ] || fail "hook-2's data changed while it was suspended"
on_its_worker "$s2"
"$bin" tenant reactivate hook-2 >/dev/null
sleep 2.5
EXPECT_SLUG=hook-2 EXPECT_STATUS=200 node scripts/citus-acceptance/run.mjs expect
ok "suspend (API: 403 tenant_suspended, data unchanged on its worker) and reactivate (API answers again)"

# Backup, then restore --replace over changed data: the archive's rows are back, on a worker.
s3=$(schema_of hook-3)
role3=$(role_of hook-3)
sums3=$(tenant_sums "$s3")
sums_at_backup=$sums3
"$bin" tenant backup hook-3 --output "$work/hook-3.capliquify-backup" --with-audit >/dev/null
q "$coord" "DELETE FROM $s3.sales" >/dev/null
q "$coord" "UPDATE $s3.products SET name = 'changed'" >/dev/null
[ "$(tenant_sums "$s3")" != "$sums3" ] || fail "hook-3's data did not change"
"$bin" tenant restore "$work/hook-3.capliquify-backup" --replace >/dev/null
[ "$(tenant_sums "$s3")" = "$sums3" ] || fail "hook-3 after restore --replace: $(tenant_sums "$s3"), before the backup: $sums3"
on_its_worker "$s3"
port3=$placed_on
no_build_schemas
EXPECT_SLUG=hook-3 EXPECT_STATUS=200 node scripts/citus-acceptance/run.mjs expect
ok "backup and restore --replace of hook-3: per-table sums as at the backup, distributed again, rows in its shards on :$port3 only"

# Clone: a new tenant on a worker, the same rows, its own role working there; then purged.
sums3=$(tenant_sums "$s3")
"$bin" tenant clone hook-3 hook-3-copy >/dev/null
sc=$(schema_of hook-3-copy)
rc=$(role_of hook-3-copy)
[ "$(tenant_sums "$sc")" = "$sums3" ] || fail "the clone's sums differ: $(tenant_sums "$sc") vs $sums3"
on_its_worker "$sc"
portc=$placed_on
psql -X -qAt -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$coord" -U postgres -d capliquify \
  -c "BEGIN; SET LOCAL search_path TO $sc; SET LOCAL ROLE $rc; INSERT INTO companies (name, currency) VALUES ('clone own', 'EUR'); COMMIT" >/dev/null ||
  fail "the clone's role cannot write on its worker"
ok "tenant clone hook-3 hook-3-copy: same per-table sums, distributed on :$portc, its role writes there"
"$bin" tenant delete hook-3-copy >/dev/null
"$bin" tenant purge hook-3-copy --force --confirm hook-3-copy >/dev/null
gone_everywhere hook-3-copy "$sc" "$rc"
ok "purge of hook-3-copy: no schema, shard, role or worker password left on the coordinator or either worker"

# Purge hook-3 itself, then restore it from its archive (no --replace): registered again,
# its members back, distributed on a worker with the archive's rows, the API serving it.
"$bin" tenant delete hook-3 >/dev/null
"$bin" tenant purge hook-3 --force --confirm hook-3 >/dev/null
gone_everywhere hook-3 "$s3" "$role3"
"$bin" tenant restore "$work/hook-3.capliquify-backup" >/dev/null
[ "$(schema_of hook-3)" = "$s3" ] || fail "hook-3 restored under another schema"
[ "$(tenant_sums "$s3")" = "$sums_at_backup" ] || fail "hook-3 restored: $(tenant_sums "$s3"), at the backup: $sums_at_backup"
on_its_worker "$s3"
port3=$placed_on
[ "$(q "$coord" "SELECT count(*) FROM pg_dist_authinfo WHERE rolename = '$role3'")" = 1 ] || fail "hook-3's role has no worker password after the restore"
[ "$(q "$w1" "SELECT rolcanlogin FROM pg_roles WHERE rolname = '$role3'")" = t ] || fail "hook-3's role may not log in to the workers"
EXPECT_SLUG=hook-3 EXPECT_STATUS=200 node scripts/citus-acceptance/run.mjs expect
ok "purged hook-3 restored from its archive: on :$port3, its role logs in to the workers, the API serves it"

# Online move: a writer and a reader on cli-2 for 30 s while `tenant move --to-worker` moves
# it to the other worker. No request fails; every acknowledged write is there afterwards;
# the tenant's tables on the new worker match what the coordinator reads; nothing of it is
# left on the old worker; the other tenants' checksums are unchanged.
checksums() { # the other tenants' tables: count and an order-independent md5 sum each
  # (schema-qualified names only: public's Citus tables print unqualified, and some of them
  # — tenant_checks, which serve updates every minute — also start with "tenant_")
  q "$coord" "SELECT string_agg(format('%s=%s', p.logicalrelid, (xpath('/row/c/text()', query_to_xml(
      format('SELECT count(*) || '':'' || coalesce(sum((''x'' || left(md5(t::text), 15))::bit(60)::bigint), 0) AS c FROM %s t', p.logicalrelid),
      false, true, '')))[1]::text), ' ' ORDER BY p.logicalrelid::text)
    FROM pg_dist_partition p WHERE p.logicalrelid::text LIKE 'tenant\_%.%'
      AND p.logicalrelid::text NOT LIKE '$1.%'"
}
moving=cli-2
schema_m=$(q "$coord" "SELECT schema_name FROM public.tenants WHERE slug = '$moving'")
from=$(q "$coord" "SELECT nodeport FROM citus_shards WHERE table_name = '$schema_m.sales'::regclass")
to=$w1
[ "$from" = "$w1" ] && to=$w2
others_before=$(checksums "$schema_m")
TRAFFIC_SLUG=$moving TRAFFIC_SECONDS=30 TRAFFIC_OUT="$work/acked" node scripts/citus-acceptance/run.mjs traffic &
traffic=$!
sleep 5
"$bin" tenant move "$moving" --to-worker "127.0.0.1:$to"
wait "$traffic" || fail "requests failed during the move (above)"
now_on=$(q "$coord" "SELECT DISTINCT nodeport FROM citus_shards WHERE table_name::text LIKE '$schema_m.%'")
[ "$now_on" = "$to" ] || fail "$moving is on :$now_on after the move to :$to"
acked=$(grep -c . "$work/acked")
# (Thousands of ids: through stdin, as one argument they can pass the kernel's 128 KiB limit.)
found=$(printf "SELECT count(*) FROM %s.sales WHERE id = ANY ('{%s}'::uuid[]);\n" \
  "$schema_m" "$(paste -sd, "$work/acked")" | q_stdin "$coord")
[ "$acked" -gt 0 ] && [ "$found" = "$acked" ] || fail "$found of $acked acknowledged writes found after the move"
left=$(q "$from" "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = '$schema_m' AND c.relname ~ '_[0-9]+\$'")
[ "$left" = 0 ] || fail "$left shard table(s) of $moving left on :$from"
shard=$(q "$coord" "SELECT shardid FROM citus_shards WHERE table_name = '$schema_m.sales'::regclass")
via_coordinator=$(q "$coord" "SELECT count(*) || ':' || sum(quantity) FROM $schema_m.sales")
on_worker=$(psql -X -qAt -h 127.0.0.1 -p "$to" -U postgres -d capliquify -c "SET citus.override_table_visibility = off; SELECT count(*) || ':' || sum(quantity) FROM $schema_m.sales_$shard" | tail -1)
[ "$via_coordinator" = "$on_worker" ] || fail "$moving's sales: $via_coordinator through the coordinator, $on_worker in the shard on :$to"
[ "$(checksums "$schema_m")" = "$others_before" ] || fail "another tenant's tables changed during the move"
[ "$(q "$coord" "SELECT count(*) FROM public.audit_logs WHERE action = 'tenant.moved' AND resource_id = '$moving'")" = 1 ] ||
  fail "the move has no tenant.moved audit row"
# monitor sizes reads Citus's shard sizes, not the coordinator's empty shells.
sizes=$("$bin" monitor sizes --json)
node -e 'const rows=JSON.parse(process.argv[1]); const r=rows.find(x=>x.slug===process.argv[2]);
  if (!r || r.total_bytes < 200000) { console.log(JSON.stringify(r)); process.exit(1) }' "$sizes" "$moving" ||
  fail "monitor sizes does not show $moving's data on its worker"
ok "online move of $moving :$from -> :$to: all $acked acknowledged writes there, shard matches ($on_worker), old worker empty, other tenants unchanged, audited"

# Rebalance: every tenant onto one worker, then `cluster rebalance` spreads them while a
# writer and a reader keep working.
for slug in $(q "$coord" "SELECT slug FROM public.tenants ORDER BY slug"); do
  s=$(q "$coord" "SELECT schema_name FROM public.tenants WHERE slug = '$slug'")
  [ "$(q "$coord" "SELECT DISTINCT nodeport FROM citus_shards WHERE table_name::text LIKE '$s.%'")" = "$w1" ] ||
    "$bin" tenant move "$slug" --to-worker "127.0.0.1:$w1" >/dev/null
done
[ "$(q "$coord" "SELECT count(DISTINCT nodeport) FROM citus_shards WHERE citus_table_type = 'schema'")" = 1 ] ||
  fail "the tenants are not all on :$w1"
"$bin" cluster status
# Throughput with every tenant on one worker, then (below) on two. All three servers and the
# service share this machine's cores: a measurement of this machine, not of scale-out.
LOAD_LABEL="1 worker" node scripts/citus-acceptance/run.mjs load
TRAFFIC_SLUG=hook-1 TRAFFIC_SECONDS=15 TRAFFIC_OUT="$work/acked-rebalance" node scripts/citus-acceptance/run.mjs traffic &
traffic=$!
sleep 2
"$bin" cluster rebalance
wait "$traffic" || fail "requests failed during the rebalance (above)"
"$bin" cluster status
spread=$(q "$coord" "SELECT count(DISTINCT nodeport) FROM citus_shards WHERE citus_table_type = 'schema'")
[ "$spread" = 2 ] || fail "after cluster rebalance the tenants are on $spread worker(s)"
status_json=$("$bin" cluster status --json)
node -e 'const w=JSON.parse(process.argv[1]); if (w.length!==2 || w.some(x=>x.tenants<1)) process.exit(1)' "$status_json" ||
  fail "cluster status --json: $status_json"
ok "cluster rebalance spread the tenants over both workers while requests kept working"
LOAD_LABEL="2 workers" node scripts/citus-acceptance/run.mjs load

# cluster tenants: Citus's per-tenant statement counts and CPU (citus_stat_tenants, with
# citus.stat_tenants_track = 'all' on every node, set above), joined to the registry. The
# load just run touched every tenant; the figures must be Citus's own, tenant by tenant.
"$bin" cluster tenants
stats_json=$("$bin" cluster tenants --json --limit 100)
expected_stats=$(q "$coord" "SELECT json_object_agg(t.slug, s.n) FROM (
    SELECT tenant_attribute, sum(query_count_in_this_period + query_count_in_last_period) AS n
      FROM citus_stat_tenants(true) GROUP BY tenant_attribute) s
    JOIN public.tenants t ON t.schema_name = s.tenant_attribute WHERE s.n > 0")
node -e 'const s=JSON.parse(process.argv[1]); const want=JSON.parse(process.argv[2]);
  const got=Object.fromEntries(s.tenants.map(t=>[t.slug, t.queries + t.queries_last_period]));
  const busy=s.tenants.filter(t=>t.queries + t.queries_last_period > 0 && t.worker);
  if (s.tracking!=="all" || busy.length < 6 || JSON.stringify(Object.entries(got).sort())!==JSON.stringify(Object.entries(want).sort())) {
    console.log(process.argv[1], process.argv[2]); process.exit(1) }' "$stats_json" "$expected_stats" ||
  fail "cluster tenants does not show citus_stat_tenants per tenant"
ok "cluster tenants: statement counts and CPU of $(node -e 'console.log(JSON.parse(process.argv[1]).tenants.length)' "$stats_json") tenants, as citus_stat_tenants counts them"

# Drain: every tenant off one worker, which then takes no new tenant; a new tenant lands on
# the other.
"$bin" cluster drain "127.0.0.1:$w1"
[ "$(q "$coord" "SELECT count(*) FROM citus_shards WHERE citus_table_type = 'schema' AND nodeport = $w1")" = 0 ] ||
  fail "tenants left on :$w1 after cluster drain"
[ "$(q "$coord" "SELECT shouldhaveshards FROM pg_dist_node WHERE nodeport = $w1")" = f ] || fail ":$w1 still takes tenants"
"$bin" tenant create --slug after-drain --name "After drain" --tier starter --clerk-org org_after_drain >/dev/null
s_new=$(q "$coord" "SELECT schema_name FROM public.tenants WHERE slug = 'after-drain'")
[ "$(q "$coord" "SELECT DISTINCT nodeport FROM citus_shards WHERE table_name::text LIKE '$s_new.%'")" = "$w2" ] ||
  fail "a tenant made after the drain is not on :$w2"
[ "$(q "$coord" "SELECT count(*) FROM public.audit_logs WHERE action = 'cluster.worker_drained'")" = 1 ] ||
  fail "the drain has no audit row"
ok "cluster drain emptied :$w1 (audited); a new tenant went to :$w2"

echo "citus acceptance passed in $(($(date +%s) - started)) s"
