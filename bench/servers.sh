# Shell functions the benchmark scripts share (sourced, not run): ports on loopback, and waiting for a server
# they started. `who` names the script in its messages.

# Whether something listens on 127.0.0.1:$1.
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# refuse_taken_ports who port…: something already on a port would be measured instead of the server about to
# be started there, so stop.
refuse_taken_ports() {
  local who=$1
  shift
  for port in "$@"; do
    if listening "$port"; then
      echo "$who: port $port is already taken (a server left over from another run?); stop it first" >&2
      exit 1
    fi
  done
}

# wait_listening who pid port log…: waits until process `pid` listens on `port`; if it died instead, shows the
# end of its logs and stops.
wait_listening() {
  local who=$1 pid=$2 port=$3
  shift 3
  for _ in $(seq 100); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$who: the server exited at start; the end of its log:" >&2
      tail -n 5 "$@" >&2 2>/dev/null || true
      exit 1
    fi
    if listening "$port"; then return 0; fi
    sleep 0.1
  done
  echo "$who: nothing listens on port $port" >&2
  exit 1
}

# release_binaries: sets `herald` and `bench` to the release binaries in $BIN_DIR (another build's, copied aside to
# compare two), or builds this checkout's in release and uses those (in $CARGO_TARGET_DIR, default target).
release_binaries() {
  local target="${CARGO_TARGET_DIR:-target}"
  if [ -z "${BIN_DIR:-}" ]; then
    cargo build --release -q -p herald -p herald-bench
  fi
  herald="${BIN_DIR:-$target/release}/herald"
  bench="${BIN_DIR:-$target/release}/herald-bench"
}

# headline FILE: the headline figure of a herald-bench result (its JSON).
headline() { sed -n 's/.*"headline": *\([0-9.]*\).*/\1/p' "$1" | head -1; }

# The server a script started last (its `start_*` sets `server_pid`); stop_server stops it and waits for it to
# exit, so that the next server finds its port free. Safe to call when none runs.
server_pid=""
stop_server() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
}

# install_redis who: Debian's redis-server and redis-cli, unless they are here already.
install_redis() {
  if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    echo "== $1: installing redis-server"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
  fi
}

# install_nchan who: Debian's nginx and libnginx-mod-nchan, unless they are here already.
install_nchan() {
  if ! command -v nginx >/dev/null || [ ! -e /usr/lib/nginx/modules/ngx_nchan_module.so ]; then
    echo "== $1: installing nginx and libnginx-mod-nchan"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx libnginx-mod-nchan >/dev/null
  fi
}

# prepare_nchan dir port: an nginx prefix in `dir` serving Nchan on 127.0.0.1:`port`
# (bench/nchan/nginx.conf.template), for start_nchan_in.
prepare_nchan() {
  mkdir -p "$1/logs"
  sed "s#@PREFIX@#$1#g; s#@PORT@#$2#g" bench/nchan/nginx.conf.template > "$1/nginx.conf"
}

# start_nchan_in who dir port: starts the nginx prepared in `dir` and waits until it listens on `port`.
start_nchan_in() {
  nginx -p "$2" -c "$2/nginx.conf" 2>>"$2/logs/stderr.log" &
  server_pid=$!
  wait_listening "$1" "$server_pid" "$3" "$2/logs/stderr.log"
}
