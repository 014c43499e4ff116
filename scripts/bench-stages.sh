#!/usr/bin/env bash
# Stage benchmarks next to their peers, whole process vs whole process, on the shared corpus:
# builds a release `docstore` (default features, and one with OCR for the OCR rows), runs `cargo bench --bench stages` (criterion; results and
# baselines under $CARGO_TARGET_DIR/criterion) and prints the ratio table (ours / peer, mean time).
# Usage: scripts/bench-stages.sh [criterion args, e.g. --save-baseline main | --baseline main]
#        scripts/bench-stages.sh --table-only   (the table of the last run's results, no run)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/docstore-target}
export DOCSTORE_CORPUS=${DOCSTORE_CORPUS:-$here/../shared/corpus}
export OMP_THREAD_LIMIT=1
if [ "${1:-}" != --table-only ]; then
  scripts/build-deps.sh --test
  # The default build times stamp, thumbnail and extract; the OCR build (which links Tesseract)
  # times OCR. Both come out as release/docstore, so the default one is kept under another name.
  cargo build --release -q -p docstore-cli
  cp "$CARGO_TARGET_DIR/release/docstore" "$CARGO_TARGET_DIR/release/docstore-default"
  cargo build --release -q -p docstore-cli --features ocr
  export DOCSTORE_BIN=$CARGO_TARGET_DIR/release/docstore-default
  export DOCSTORE_OCR_BIN=$CARGO_TARGET_DIR/release/docstore
  cargo bench -q -p docstore-benches --features ocr --bench stages -- "$@" >/dev/null
fi
python3 - "$CARGO_TARGET_DIR/criterion" <<'PY'
import json, os, sys
root = sys.argv[1]
peers = {"stamp": ["qpdf-overlay"], "thumbnail": ["vipsthumbnail", "pdftoppm"],
         "extract": ["pdftotext"], "ocr": ["pdftoppm-tesseract"]}
def mean(group, who, file):
    p = os.path.join(root, group, who, file, "new", "estimates.json")
    if not os.path.exists(p):
        return None
    return json.load(open(p))["mean"]["point_estimate"] / 1e6
print("| stage | file | lib ms | docstore ms | peer | peer ms | docstore / peer |")
print("| --- | --- | ---: | ---: | --- | ---: | ---: |")
for group, names in peers.items():
    gdir = os.path.join(root, group, "lib")
    if not os.path.isdir(gdir):
        continue
    for file in sorted(os.listdir(gdir)):
        lib, ours = mean(group, "lib", file), mean(group, "docstore", file)
        for peer in names:
            p = mean(group, peer, file)
            if p is None:
                continue
            ratio = f"{ours / p:.2f}×" if ours else "–"
            fmt = lambda v: f"{v:.1f}" if v is not None else "–"
            print(f"| {group} | {file} | {fmt(lib)} | {fmt(ours)} | {peer} | {p:.1f} | {ratio} |")
PY
