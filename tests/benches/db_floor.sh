#!/usr/bin/env bash
# The database's floor under the hot path (BENCHMARKS.md, issue #27): one admission and one
# settlement, the gateway's own SQL, sent by pgbench (libpq, one client, no gateway) one pair
# after another, with pgbench's per-statement latency. Against the `admit` stage of the
# hot-path bench's `server-timing` table it splits admission's time into the database's work
# and the client's (driver, runtime, wake-ups).
#
# Two scripts run interleaved in one pgbench run (each transaction picks one at random, half and
# half), so their figures are side by side on the same database and the same noise:
# - `gateway`: `llmlite_admit` as the gateway calls it (each route's geography, the key's and
#   team's guardrail and residency read back), then `llmlite_settle_recorded`;
# - `checked`: the same pair with `llmlite_admit_checked`, admission's body before the
#   guardrail and residency wrapper (20261207000004): what the wrapper adds is the difference.
#
# Run: cargo build --release -p llmlite-gateway && bash tests/benches/db_floor.sh
# Settings: DATABASE_URL (a server to create a throwaway database on; default the machine's
# 127.0.0.1:5432 as postgres), BENCH_SECONDS (default 10), LLMLITE_BIN (the binary that migrates
# the throwaway database; default the release build).
set -euo pipefail
cd "$(dirname "$0")/../.."

server="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
seconds="${BENCH_SECONDS:-10}"
target="${CARGO_TARGET_DIR:-target}"
bin="${LLMLITE_BIN:-$target/release/llmlite}"
pgbench="$(command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench | tail -1)"
name="llmlite_db_floor_$$"
db="${server%/*}/$name"
key="$(printf 'a%.0s' $(seq 64))"

psql "$server" -qc "CREATE DATABASE $name"
trap 'psql "$server" -qc "DROP DATABASE IF EXISTS $name WITH (FORCE)"' EXIT
if ! out="$(DATABASE_URL="$db" "$bin" migrate 2>&1)"; then
  echo "$out" >&2
  exit 1
fi
# A key with every limit set, as the hot-path bench mints it.
psql "$db" -qc "INSERT INTO litellm_verificationtoken
    (token, key_name, rpm_limit, tpm_limit, max_budget, max_parallel_requests, budget_duration,
     budget_reset_at)
  VALUES ('$key', 'sk-...aaaa', 1000000, 1000000000, 1000000, 10000, '30 days',
          now() + interval '30 days')"
key_id="$(psql "$db" -Atc "SELECT key_id FROM litellm_verificationtoken WHERE token = '$key'")"

dir="$(mktemp -d)"
trap 'rm -rf "$dir"; psql "$server" -qc "DROP DATABASE IF EXISTS $name WITH (FORCE)"' EXIT
settle="SELECT key_spend, queued FROM llmlite_settle_recorded('acompletion', NULL, 'floor-' || :client_id || '-' || :n, $key_id, '$key', NULL, NULL, NULL, NULL, 'claude-haiku-4-5', 'model', 20, 10, 0, 0, 0.000077, now(), now(), 'success', NULL, '{}'::jsonb, '{\"request_id\": \"floor\"}', '{}'::jsonb);"
admit_args="'$key', ARRAY['claude-haiku-4-5'], ARRAY[0.0004]::numeric[], 'model', 'floor-' || :client_id || '-' || :n, now(), 20, 0.000022, interval '15 minutes', 60, false, NULL"
cat >"$dir/gateway" <<SQL
\set n random(1, 2000000000)
SELECT * FROM llmlite_admit($admit_args, ARRAY['eu']);
$settle
SQL
cat >"$dir/checked" <<SQL
\set n random(1, 2000000000)
SELECT * FROM llmlite_admit_checked($admit_args);
$settle
SQL
# Extended protocol with unnamed statements, as the gateway sends them (no named prepares).
"$pgbench" -n -M extended -c 1 -T "$seconds" -r -f "$dir/gateway@1" -f "$dir/checked@1" "$db" |
  grep -E 'latency average|tps|SQL script|llmlite_' |
  sed -E 's/^ +//; s/(llmlite_[a-z_]+)\(.*/\1(...)/'
