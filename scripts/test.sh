#!/usr/bin/env bash
# The whole test suite: formatting, lints, every test (the conformance suite on every backend,
# tamper classes, corpus round trips, CLI end to end), benches and fuzz targets compiled.
# Services the tests need are started here and stopped on exit (none yet: embedded backends only).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
export DOCSTORE_CORPUS=${DOCSTORE_CORPUS:-$here/../shared/corpus}
[ -f "$DOCSTORE_CORPUS/MANIFEST.tsv" ] || { echo "test corpus not found at $DOCSTORE_CORPUS" >&2; exit 1; }

echo "== fmt"; cargo fmt --all -- --check
echo "== clippy"; cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== tests"; cargo test --workspace --all-targets --locked
echo "== doc tests"; cargo test --workspace --doc --locked
echo "== examples"; cargo run -q -p docstore --example put_get --locked >/dev/null
