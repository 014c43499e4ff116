#!/usr/bin/env bash
# Mixed patient and staff traffic (a measurement, not a test): locust (PyPI, in a venv under
# ~/.cache) against `docstore serve` on the embedded default, the server on CPU 1 and locust on
# CPU 0, all on 127.0.0.1. Seeds 20 patients with released results, then runs
# scripts/load/locustfile.py headless. Fails if any request failed. Writes
# docs/benchmarks/locust-DATE.md.
# Usage: scripts/load-mixed.sh [SECONDS, default 300] [USERS, default 40]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-300}
users=${2:-40}
venv=${DOCSTORE_LOAD_VENV:-$HOME/.cache/docstore-load-venv}
if [ ! -x "$venv/bin/locust" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'locust>=2.30,<3'
fi
target=${CARGO_TARGET_DIR:-$here/target}
(cd "$here" && cargo build -q --release -p docstore-cli)
bin="$target/release/docstore"
work=$(mktemp -d /tmp/docstore-load.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export DOCSTORE_DATA_DIR="$work/data"
"$bin" init >/dev/null 2>&1
# The per-identity download limit is tested elsewhere; here 40 users share 20 patients.
taskset -c 1 "$bin" serve --listen "127.0.0.1:$port" --downloads-per-minute 1000000 2>"$work/serve.log" &
pids+=($!)
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
python3 "$here/scripts/load/make_pdf.py" "$work/report.pdf"
staff=$("$bin" token --role staff --sub load-staff --ttl 2h)
python3 - "$port" "$staff" "$work" "$bin" <<'PY'
import json, subprocess, sys, time, urllib.request
port, staff, work, binary = sys.argv[1:5]
base = f"http://127.0.0.1:{port}"
pdf = open(f"{work}/report.pdf", "rb").read()
def call(method, path, body=None, ctype=None, token=staff):
    req = urllib.request.Request(base + path, data=body, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if ctype:
        req.add_header("Content-Type", ctype)
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read() or b"null")
patients = []
for i in range(20):
    p, e = f"pac-load-{i}", f"exm-load-{i}"
    docs = [call("POST", f"/v1/documents?patient={p}&exam={e}", pdf, "application/pdf")["document_id"] for _ in range(3)]
    call("POST", f"/v1/exams/{e}/release", b"{}", "application/json")
    token = subprocess.check_output([binary, "token", "--role", "patient", "--sub", f"u-{i}",
                                     "--patient", p, "--ttl", "2h"], text=True).strip()
    patients.append({"patient": p, "exam": e, "documents": docs, "token": token})
# Wait until every seeded document has its thumbnail (the in-process pipeline).
for p in patients:
    for d in p["documents"]:
        for _ in range(300):
            try:
                urllib.request.urlopen(urllib.request.Request(
                    f"{base}/v1/documents/{d}/versions/1/renditions/thumbnail",
                    headers={"Authorization": f"Bearer {staff}"}))
                break
            except Exception:
                time.sleep(0.2)
        else:
            sys.exit(f"no thumbnail for {d}")
json.dump({"staff": staff, "patients": patients}, open(f"{work}/seed.json", "w"))
PY
export DOCSTORE_LOAD_SEED="$work/seed.json" DOCSTORE_LOAD_PDF="$work/report.pdf"
set +e
taskset -c 0 "$venv/bin/locust" -f "$here/scripts/load/locustfile.py" --headless \
  -u "$users" -r 10 -t "${secs}s" --host "http://127.0.0.1:$port" --csv "$work/run" \
  --only-summary >"$work/locust.log" 2>&1
rc=$?
set -e
date=$(date -u +%Y-%m-%d)
out="$here/docs/benchmarks/locust-$date.md"
python3 - "$work/run_stats.csv" "$out" "$secs" "$users" "$(nproc)" <<'PY'
import csv, sys
stats, out, secs, users, cores = sys.argv[1:6]
rows = list(csv.DictReader(open(stats)))
with open(out, "w") as f:
    f.write(f"# Mixed load (locust), {__import__('datetime').date.today()}\n\n")
    f.write(f"`scripts/load-mixed.sh {secs} {users}` on {cores} cores: locust {users} users (4 patients : 1 staff), "
            f"{secs} s, pinned to CPU 0; `docstore serve` (release build, embedded default, in-process "
            "pipeline, every request authenticated, authorized and audited with fsync) on CPU 1.\n\n")
    f.write("| request | count | failures | req/s | p50 ms | p95 ms | p99 ms |\n")
    f.write("| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
    for r in rows:
        f.write(f"| {r['Name']} | {r['Request Count']} | {r['Failure Count']} | {float(r['Requests/s']):.1f} | "
                f"{r['50%']} | {r['95%']} | {r['99%']} |\n")
    total = [r for r in rows if r["Name"] == "Aggregated"][0]
    f.write(f"\nFailures: {total['Failure Count']} of {total['Request Count']} requests.\n")
print(open(out).read())
if int(total["Failure Count"]) > 0:
    sys.exit(1)
PY
[ "$rc" = 0 ] || { cat "$work/locust.log" >&2; exit "$rc"; }
