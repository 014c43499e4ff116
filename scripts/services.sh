#!/usr/bin/env bash
# Installs (if needed), starts and stops the servers the integration tests run against, on
# 127.0.0.1 only, on free ports:
#   - moto (PyPI `moto[server]`, in a venv): S3, DynamoDB and KMS on one port, launched through
#     scripts/moto_server.py, which adds KMS key-state enforcement that moto lacks
#   - PostgreSQL (Debian's `postgresql`): a throwaway cluster
#   - Apache Kafka 4.x (from Maven Central with scripts/kafka/pom.xml): a single-node KRaft
#     broker+controller, with a PLAINTEXT listener and two authenticated ones (SASL_PLAINTEXT and
#     SASL_SSL, SCRAM-SHA-512; a CA and certificate made by openssl for the run)
# Usage: scripts/services.sh start|stop|env
#   start  prints nothing but progress; writes $DOCSTORE_SERVICES_DIR/env (source it)
#   env    prints the env file
set -euo pipefail
dir=${DOCSTORE_SERVICES_DIR:-/tmp/docstore-services}
venv=${DOCSTORE_VENV:-$HOME/.cache/docstore-venv}
mkdir -p "$dir"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

wait_port() { # port, seconds
  for _ in $(seq 1 $(( $2 * 10 ))); do
    if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),0.2)" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "port $1 did not open within $2 s" >&2; return 1
}

pg_bin() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$d" ] || [ ! -x "$d/initdb" ]; then
    echo "installing postgresql from Debian" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null && apt-get install -y -qq postgresql >/dev/null
    d=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  echo "$d"
}

as_pg() { # postgres refuses to run as root
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_moto() {
  if [ ! -x "$venv/bin/moto_server" ]; then
    echo "installing moto[server] into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check 'moto[server]'
  fi
  # An independent event consumer for the interoperability test (CloudEvents SDK, Kafka client).
  if ! "$venv/bin/python" -c 'import cloudevents.core.bindings.kafka, confluent_kafka' 2>/dev/null; then
    echo "installing cloudevents and confluent-kafka into $venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check 'cloudevents>=2.2,<3' 'confluent-kafka>=2.3,<3'
  fi
  local port; port=$(free_port)
  # moto plus KMS key-state checks (see scripts/moto_server.py).
  "$venv/bin/python" "$(dirname "$0")/moto_server.py" -H 127.0.0.1 -p "$port" >"$dir/moto.log" 2>&1 &
  echo $! >"$dir/moto.pid"
  wait_port "$port" 30
  # Buckets are created with an unsigned PUT (moto accepts it).
  curl -fsS -X PUT "http://127.0.0.1:$port/docstore-test" >/dev/null
  echo "moto on 127.0.0.1:$port" >&2
  echo "$port"
}

start_pg() {
  local bin port data
  bin=$(pg_bin)
  port=$(free_port)
  data="$dir/pg"
  rm -rf "$data"; mkdir -p "$data"
  chown -R postgres "$dir" 2>/dev/null || true
  as_pg "$bin/initdb" -D "$data" -U docstore --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1
  as_pg "$bin/pg_ctl" -D "$data" -l "$dir/pg.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=on" start >/dev/null
  as_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U docstore docstore
  echo "postgres on 127.0.0.1:$port" >&2
  echo "$port"
}

kafka_libs=${DOCSTORE_KAFKA_LIBS:-$HOME/.cache/docstore-kafka-4.1.1/libs}

start_kafka() {
  if ! ls "$kafka_libs"/kafka_2.13-*.jar >/dev/null 2>&1; then
    echo "fetching Apache Kafka from Maven Central into $kafka_libs" >&2
    command -v mvn >/dev/null || { echo "mvn not found" >&2; return 1; }
    mvn -q -B -f "$(dirname "$0")/kafka/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$kafka_libs" >"$dir/mvn.log" 2>&1 || { tail -20 "$dir/mvn.log" >&2; return 1; }
  fi
  local port cport sport tport data tls
  port=$(free_port); cport=$(free_port); sport=$(free_port); tport=$(free_port)
  data="$dir/kafka"; tls="$dir/kafka-tls"
  rm -rf "$data" "$tls"; mkdir -p "$data" "$tls"
  # The authenticated listeners' material, made for this run: a CA, the broker's certificate
  # for 127.0.0.1 (PEM key store), and a SCRAM-SHA-512 user with a random password.
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$tls/ca.key" -out "$tls/ca.pem" -days 2 \
    -subj "/CN=docstore test CA" >/dev/null 2>&1
  openssl req -newkey rsa:2048 -nodes -keyout "$tls/broker.key" -out "$tls/broker.csr" \
    -subj "/CN=127.0.0.1" >/dev/null 2>&1
  printf 'subjectAltName=IP:127.0.0.1\n' >"$tls/san.ext"
  openssl x509 -req -in "$tls/broker.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial \
    -out "$tls/broker.pem" -days 2 -extfile "$tls/san.ext" >/dev/null 2>&1
  openssl pkcs8 -topk8 -nocrypt -in "$tls/broker.key" -out "$tls/broker.pk8"
  cat "$tls/broker.pk8" "$tls/broker.pem" >"$tls/broker-store.pem"
  scram_password=$(python3 -c 'import secrets;print(secrets.token_urlsafe(18))')
  printf '%s' "$scram_password" >"$tls/scram-password"
  echo "$sport $tport" >"$tls/ports"
  cat >"$dir/kafka.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,SASL_PLAINTEXT://127.0.0.1:$sport,SASL_SSL://127.0.0.1:$tport,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port,SASL_PLAINTEXT://127.0.0.1:$sport,SASL_SSL://127.0.0.1:$tport
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL
inter.broker.listener.name=PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PEM
ssl.keystore.location=$tls/broker-store.pem
log.dirs=$data
num.partitions=6
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
auto.create.topics.enable=false
PROPS
  local cluster
  cluster=$(python3 -c 'import uuid,base64;print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')
  java -cp "$kafka_libs/*" kafka.tools.StorageTool format -t "$cluster" -c "$dir/kafka.properties" \
    --add-scram "SCRAM-SHA-512=[name=docstore,password=$scram_password]" \
    >"$dir/kafka-format.log" 2>&1
  java -Xmx768m -Dlog4j2.configurationFile="$(cd "$(dirname "$0")" && pwd)/kafka/log4j2.properties" \
    -cp "$kafka_libs/*" kafka.Kafka "$dir/kafka.properties" >"$dir/kafka.log" 2>&1 &
  echo $! >"$dir/kafka.pid"
  wait_port "$port" 60
  echo "kafka on 127.0.0.1:$port" >&2
  echo "$port"
}

stop_all() {
  if [ -f "$dir/kafka.pid" ]; then
    pid=$(cat "$dir/kafka.pid"); kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true; rm -f "$dir/kafka.pid"
  fi
  if [ -f "$dir/moto.pid" ]; then kill "$(cat "$dir/moto.pid")" 2>/dev/null || true; rm -f "$dir/moto.pid"; fi
  if [ -d "$dir/pg" ]; then
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$bin" ] && as_pg "$bin/pg_ctl" -D "$dir/pg" -m fast -w stop >/dev/null 2>&1 || true
  fi
}

case "${1:-}" in
  start)
    stop_all
    moto_port=$(start_moto)
    pg_port=$(start_pg)
    kafka_port=$(start_kafka)
    cat >"$dir/env" <<ENV
export DOCSTORE_TEST_AWS_ENDPOINT=http://127.0.0.1:$moto_port
export DOCSTORE_TEST_S3_BUCKET=docstore-test
export DOCSTORE_TEST_PG_URL=postgres://docstore@127.0.0.1:$pg_port/docstore
export DOCSTORE_TEST_MOTO_PID=$(cat "$dir/moto.pid")
export DOCSTORE_TEST_KAFKA=127.0.0.1:$kafka_port
export DOCSTORE_TEST_PYTHON=$venv/bin/python
export DOCSTORE_TEST_KAFKA_PID=$(cat "$dir/kafka.pid")
export DOCSTORE_TEST_KAFKA_SASL=127.0.0.1:$(cut -d' ' -f1 "$dir/kafka-tls/ports")
export DOCSTORE_TEST_KAFKA_SASL_SSL=127.0.0.1:$(cut -d' ' -f2 "$dir/kafka-tls/ports")
export DOCSTORE_TEST_KAFKA_CA=$dir/kafka-tls/ca.pem
export DOCSTORE_TEST_KAFKA_SCRAM_USER=docstore
export DOCSTORE_TEST_KAFKA_SCRAM_PASSWORD=$(cat "$dir/kafka-tls/scram-password")
export DOCSTORE_TEST_PG_PID=$(head -n 1 "$dir/pg/postmaster.pid")
ENV
    ;;
  stop) stop_all ;;
  env) cat "$dir/env" ;;
  *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
