#!/usr/bin/env bash
# The whole test suite: formatting, lints, every test (the conformance suite on every backend,
# tamper classes, corpus round trips, CLI end to end, the HTTP service), benches and fuzz
# targets compiled, the HTTP API fuzzed from its OpenAPI document, and the web pages driven in
# headless Chromium.
# The servers the tests need (moto for S3/DynamoDB/KMS, PostgreSQL, Apache Kafka) are installed if missing,
# started on 127.0.0.1 by scripts/services.sh and stopped on exit; tests that need them fail
# (not skip) here when they are missing.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
export DOCSTORE_CORPUS=${DOCSTORE_CORPUS:-$here/../shared/corpus}
[ -f "$DOCSTORE_CORPUS/MANIFEST.tsv" ] || { echo "test corpus not found at $DOCSTORE_CORPUS" >&2; exit 1; }

echo "== build and test dependencies"; scripts/build-deps.sh --test
echo "== services"
export DOCSTORE_SERVICES_DIR=${DOCSTORE_SERVICES_DIR:-$(mktemp -d /tmp/docstore-services.XXXXXX)}
trap 'scripts/services.sh stop' EXIT
scripts/services.sh start
# shellcheck disable=SC1091
source "$DOCSTORE_SERVICES_DIR/env"
export DOCSTORE_REQUIRE_SERVICES=1

echo "== fmt"; cargo fmt --all -- --check
echo "== clippy"; cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
echo "== tests"; cargo test --workspace --all-targets --all-features --locked
echo "== the verify worker links no parser"
# Each stage is a cargo feature of docstore-workers; with `verify` alone no PDF, image, OCR or
# search crate may be in its dependency tree.
linked=$(cargo tree -q -p docstore-workers --no-default-features --features verify -e normal --prefix none --locked |
  grep -Ei '^(lopdf|printpdf|pdf_oxide|pdf-extract|hayro[a-z_-]*|image|tiff|jpeg-decoder|zune-[a-z]+|png|fast_image_resize|tesseract[a-z-]*|leptonica[a-z-]*|tantivy[a-z-]*) ' | sort -u || true)
[ -z "$linked" ] || { echo "the verify worker links: $linked" >&2; exit 1; }
echo "== API fuzzing (schemathesis, openapi-spec-validator)"; scripts/api-fuzz.sh
echo "== pages in headless Chromium (selenium)"; scripts/ui-test.sh
echo "== doc tests"; cargo test --workspace --doc --locked
echo "== examples"
# Built with the test build's features, so only the examples themselves are linked; each asserts
# what it prints.
cargo build -q --workspace --examples --all-features --locked
for example in put_get custom_blob_backend embed_in_service write_a_stage search serve_in_process; do
  "${CARGO_TARGET_DIR:-$here/target}/debug/examples/$example" >/dev/null
done
