#!/usr/bin/env bash
# HTTP load bench (a measurement, not a test): `docstore serve` on the embedded default next to
# nginx serving the same plaintext files, both on CPU 1, the load generator (wrk) on CPU 0, at
# 64 connections, all on 127.0.0.1. Measures GET of a 1 MB exam, GET of a thumbnail and a
# metadata list: req/s, p50 and p99. Writes docs/benchmarks/http-DATE.md.
# Usage: scripts/bench-http.sh [SECONDS per run, default 10]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-10}
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
if [ ${#need[@]} -gt 0 ]; then
  sudo_=(); [ "$(id -u)" = 0 ] || sudo_=(sudo)
  DEBIAN_FRONTEND=noninteractive "${sudo_[@]}" apt-get install -y -qq "${need[@]}" >/dev/null
fi
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
target=${CARGO_TARGET_DIR:-$here/target}
(cd "$here" && cargo build -q --release -p docstore-cli)
bin="$target/release/docstore"
work=$(mktemp -d /tmp/docstore-bench-http.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

export DOCSTORE_DATA_DIR="$work/data"
"$bin" init >/dev/null 2>&1
head -c 1048576 /dev/urandom >"$work/exam.bin"
port=$(free_port)
taskset -c 1 "$bin" serve --listen "127.0.0.1:$port" --downloads-per-minute 4000000000 2>"$work/serve.log" &
pids+=($!)
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
token=$("$bin" token --role staff --sub bench --ttl 2h)
auth="Authorization: Bearer $token"
put() { curl -sSf -X POST -H "$auth" -H "Content-Type: $2" --data-binary "@$1" "http://127.0.0.1:$port/v1/documents?patient=pac-bench&exam=$3"; }
big=$(put "$work/exam.bin" application/pdf exm-big | python3 -c 'import json,sys; print(json.load(sys.stdin)["document_id"])')
# A real report, so that the in-process pipeline makes a thumbnail.
python3 "$here/scripts/load/make_pdf.py" "$work/report.pdf"
small=$(put "$work/report.pdf" application/pdf exm-small | python3 -c 'import json,sys; print(json.load(sys.stdin)["document_id"])')
thumb="/v1/documents/$small/versions/1/renditions/thumbnail"
for _ in $(seq 1 300); do curl -sf -H "$auth" "http://127.0.0.1:$port$thumb" -o "$work/thumb.png" && break; sleep 0.2; done
[ -s "$work/thumb.png" ] || { echo "no thumbnail" >&2; exit 1; }
for i in $(seq 1 48); do put "$work/report.pdf" application/pdf "exm-list-$i" >/dev/null; done

# nginx: the same bytes, plaintext, no authentication: the ceiling.
mkdir -p "$work/www"
cp "$work/exam.bin" "$work/www/exam.bin"; cp "$work/thumb.png" "$work/www/thumb.png"
curl -sSf -H "$auth" "http://127.0.0.1:$port/v1/patients/pac-bench/documents?limit=50" -o "$work/www/list.json"
nport=$(free_port)
cat >"$work/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  client_body_temp_path $work/tmp; proxy_temp_path $work/tmp; fastcgi_temp_path $work/tmp;
  uwsgi_temp_path $work/tmp; scgi_temp_path $work/tmp;
  server { listen 127.0.0.1:$nport; root $work/www; }
}
NGINX
mkdir -p "$work/tmp"
# nginx's workers run as an unprivileged user: let them read the files (and nothing else here).
chmod 711 "$work"; chmod 755 "$work/www"; chmod 644 "$work/www/"*
taskset -c 1 "$nginx_bin" -c "$work/nginx.conf" -g 'daemon off;' &
pids+=($!)
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$nport/thumb.png" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$nport/exam.bin" -o /dev/null || { echo "nginx does not serve the files" >&2; exit 1; }

run() { # name url [header]
  local out
  if [ -n "${3:-}" ]; then
    out=$(taskset -c 0 wrk -t1 -c64 -d"${secs}s" --latency -H "$3" "$2")
  else
    out=$(taskset -c 0 wrk -t1 -c64 -d"${secs}s" --latency "$2")
  fi
  local rps p50 p99 errors
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
  echo "$1|$rps|$p50|$p99|${errors:-none}"
}
rows=()
rows+=("$(run "docstore GET 1 MB exam" "http://127.0.0.1:$port/v1/documents/$big" "$auth")")
rows+=("$(run "nginx GET 1 MB file" "http://127.0.0.1:$nport/exam.bin")")
rows+=("$(run "docstore GET thumbnail" "http://127.0.0.1:$port$thumb" "$auth")")
rows+=("$(run "nginx GET thumbnail" "http://127.0.0.1:$nport/thumb.png")")
rows+=("$(run "docstore GET patient list (50)" "http://127.0.0.1:$port/v1/patients/pac-bench/documents?limit=50" "$auth")")
rows+=("$(run "nginx GET the same list as a file" "http://127.0.0.1:$nport/list.json")")

date=$(date -u +%Y-%m-%d)
out="$here/docs/benchmarks/http-$date.md"
{
  echo "# HTTP load, $date"
  echo
  echo "\`scripts/bench-http.sh $secs\` on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)):"
  echo "wrk 1 thread, 64 connections, ${secs} s per row, pinned to CPU 0; \`docstore serve\` (release build,"
  echo "embedded default, local issuer token, every request authenticated, authorized, audited with"
  echo "fsync, content decrypted and verified) and nginx (plaintext files, no authentication) each on CPU 1."
  echo
  echo "| work | req/s | p50 | p99 | errors |"
  echo "| --- | ---: | ---: | ---: | --- |"
  for r in "${rows[@]}"; do IFS='|' read -r n a b c d <<<"$r"; echo "| $n | $a | $b | $c | $d |"; done
  echo
  ratio() { python3 -c "import sys; print(f'{float(sys.argv[1])/float(sys.argv[2]):.2f}')" "$1" "$2"; }
  IFS='|' read -r _ d1 _ <<<"${rows[0]}"; IFS='|' read -r _ n1 _ <<<"${rows[1]}"
  IFS='|' read -r _ d2 _ <<<"${rows[2]}"; IFS='|' read -r _ n2 _ <<<"${rows[3]}"
  IFS='|' read -r _ d3 _ <<<"${rows[4]}"; IFS='|' read -r _ n3 _ <<<"${rows[5]}"
  echo "Ratios, docstore ÷ nginx (same run): 1 MB GET $(ratio "$d1" "$n1")×, thumbnail $(ratio "$d2" "$n2")×, list $(ratio "$d3" "$n3")×."
} >"$out"
cat "$out"
