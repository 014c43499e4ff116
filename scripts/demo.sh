#!/usr/bin/env bash
# The main job on the embedded default, no servers: store exam documents (versioned, envelope-
# encrypted), read them back whole and by range, and show the audit trail.
# Usage: scripts/demo.sh [CORPUS_DIR]   (default: ../shared/corpus beside this checkout)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
corpus=${1:-${DOCSTORE_CORPUS:-$here/../shared/corpus}}
"$here/scripts/build-deps.sh"
cargo build --release -q -p docstore-cli --manifest-path "$here/Cargo.toml"
bin=${CARGO_TARGET_DIR:-$here/target}/release/docstore
data=$(mktemp -d)/docstore-data
trap 'rm -rf "$(dirname "$data")"' EXIT
export DOCSTORE_DATA_DIR=$data DOCSTORE_ACTOR=staff:demo
say() { printf '\n$ docstore %s\n' "$*"; "$bin" "$@"; }

say init
report=$corpus/text-pt-8p-diario-oficial-signed.pdf
image=$corpus/image-jpeg-exif-orientation-6.jpg
[ -f "$report" ] || { echo "corpus not found at $corpus" >&2; exit 1; }
doc=$("$bin" --json put "$report" --patient pac-0001 --exam exm-2026-001 | sed -n 's/.*"document_id": "\(.*\)".*/\1/p')
echo "stored report as document $doc (v1)"
say put "$report" --patient pac-0001 --exam exm-2026-001 --document "$doc"
say put "$image" --patient pac-0001 --exam exm-2026-001 --kind image
say versions "$doc"
say list --patient pac-0001
out=$(dirname "$data")/report-v1.pdf
say get "$doc" --version 1 -o "$out"
cmp "$out" "$report" && echo "v1 read back byte-identical ($(stat -c %s "$out") bytes)"
printf '\n$ docstore get %s --range 0-8\n' "$doc"; "$bin" get "$doc" --range 0-8; echo
if grep -rqaF "%PDF-1." "$data"/objects; then echo "plaintext found at rest!" >&2; exit 1; fi
echo "no plaintext at rest: the objects folder holds only envelopes"
say delete "$doc"
"$bin" get "$doc" >/dev/null 2>&1 || echo "reads of a deleted document are refused (exit $?)"
say restore "$doc"
say audit --limit 12
