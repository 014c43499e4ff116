#!/usr/bin/env bash
# API fuzzing: validates the served OpenAPI document (openapi-spec-validator) and runs
# schemathesis against it with a staff token on a fresh embedded `docstore serve` on 127.0.0.1.
# Fails on any 5xx, undocumented status or content type, or response that breaks its schema.
# Usage: scripts/api-fuzz.sh [MAX_EXAMPLES_PER_OPERATION]   (default 40: about 2,000 requests)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
examples=${1:-40}
venv=${DOCSTORE_API_VENV:-$HOME/.cache/docstore-api-venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
if [ ! -x "$venv/bin/st" ] || [ ! -x "$venv/bin/openapi-spec-validator" ]; then
  echo "installing schemathesis and openapi-spec-validator into $venv" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check schemathesis openapi-spec-validator
fi
target=${CARGO_TARGET_DIR:-$here/target}
bin="$target/debug/docstore"
[ -x "$bin" ] || (cd "$here" && cargo build -q -p docstore-cli)
work=$(mktemp -d /tmp/docstore-api-fuzz.XXXXXX)
export DOCSTORE_DATA_DIR="$work/data"
"$bin" init >/dev/null 2>&1
"$bin" serve --listen 127.0.0.1:0 2>"$work/serve.log" &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$work"' EXIT
addr=""
for _ in $(seq 1 100); do
  addr=$(sed -n 's/^listening on http:\/\///p' "$work/serve.log" | head -n 1)
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { cat "$work/serve.log" >&2; echo "serve did not start" >&2; exit 1; }
token=$("$bin" token --role staff --sub api-fuzz --ttl 2h)
curl -sSf "http://$addr/v1/openapi.json" -o "$work/openapi.json"
"$venv/bin/openapi-spec-validator" "$work/openapi.json" | tail -n 1
"$venv/bin/st" run "http://$addr/v1/openapi.json" \
  -H "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
  --max-examples "$examples" --request-timeout 30 --no-color 2>&1 | tee "$work/st.log"
# A run that generated too few requests proves nothing.
generated=$(sed -n 's/.* \([0-9][0-9]*\) generated.*/\1/p' "$work/st.log" | tail -n 1)
echo "api-fuzz: ${generated:-0} generated requests"
[ "${generated:-0}" -ge 1000 ] || { echo "api-fuzz: fewer than 1,000 requests" >&2; exit 1; }
