#!/usr/bin/env bash
# The main job on the embedded default, no servers: `docstore demo` generates synthetic Portuguese
# lab reports and exam images, uploads them (versioned, envelope-encrypted), stamps, thumbnails,
# extracts and indexes them through the in-process bus, and searches them; then a few more
# searches and reads show the store at work.
# Usage: scripts/demo.sh [--serve] [REPORTS]   (default 60; the store and index are left in
# ./docstore-demo). With --serve, the first patient's exams are then released and the web pages
# served on http://127.0.0.1:8080/ (development sign-in) until Ctrl-C.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
serve=0
if [ "${1:-}" = "--serve" ]; then serve=1; shift; fi
reports=${1:-60}
"$here/scripts/build-deps.sh"
cargo build --release -q -p docstore-cli --manifest-path "$here/Cargo.toml"
bin=${CARGO_TARGET_DIR:-$here/target}/release/docstore
data=${DOCSTORE_DEMO_DIR:-$PWD/docstore-demo}
rm -rf "$data"
export DOCSTORE_DATA_DIR=$data DOCSTORE_ACTOR=staff:demo
say() { printf '\n$ docstore %s\n' "$*"; "$bin" "$@"; }

say demo --reports "$reports" --images $((reports / 5))
say search '"hemoglobina glicada"' --per-page 3
say search 'creatinina' --kind report --sort newest --per-page 3
doc=$("$bin" --json search 'lipidograma' --per-page 1 | sed -n 's/.*"document_id": "\(.*\)".*/\1/p' | head -1)
say versions "$doc"
out=$(mktemp -d)/laudo.pdf
say get "$doc" -o "$out"
head -c 8 "$out"; echo "  ← the report, decrypted ($(stat -c %s "$out") bytes)"
if grep -rqaF "%PDF-1." "$data"/objects; then echo "plaintext found at rest!" >&2; exit 1; fi
# The index is sealed too: the words the searches above found are in none of its files.
if grep -rqaiE "hemoglobina|creatinina|lipidograma" "$data"/index; then echo "plaintext found in the index!" >&2; exit 1; fi
echo "no plaintext at rest: the objects folder holds only envelopes (originals and renditions)"
say audit --limit 5

[ "$serve" = 1 ] || exit 0
listen=${DOCSTORE_DEMO_LISTEN:-127.0.0.1:8080}
# Read before serving: the server then holds the index.
patient=$("$bin" --json search '"hemoglobina glicada"' --per-page 1 | sed -n 's/.*"patient_id": "\(.*\)".*/\1/p' | head -1)
log=$(mktemp)
"$bin" serve --listen "$listen" >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null' EXIT INT TERM
for _ in $(seq 1 100); do grep -q "listening on" "$log" && break; sleep 0.1; done
grep -q "listening on" "$log" || { cat "$log" >&2; exit 1; }
token=$("$bin" token --role staff --sub demo --ttl 1h)
for exam in $(curl -sSf -H "Authorization: Bearer $token" "http://$listen/v1/patients/$patient/documents?limit=200" \
    | grep -o '"exam_id":"[^"]*"' | cut -d'"' -f4 | sort -u); do
  curl -sSf -X POST -H "Authorization: Bearer $token" "http://$listen/v1/exams/$exam/release" >/dev/null
done
cat <<MSG

The pages are at http://$listen/ (development sign-in, not for production):
  - staff: user "ana", role "staff", then search "hemoglobina glicada";
  - patient: any user, role "patient", patient "$patient" (their exams are released), for "Meus exames".
Ctrl-C stops the server.
MSG
wait "$pid"
