#!/usr/bin/env bash
# The demo's private MariaDB: binlog on, ROW format, FULL row image, GTIDs,
# on 127.0.0.1:${DEMO_MYSQL_PORT:-3307} with its data in
# ${DEMO_STATE:-.state}/mariadb. It never touches the machine's MariaDB on 3306.
#
#   demo-mariadb.sh          start it unless something already answers on the
#                            port (then say whose it is and exit 0)
#   demo-mariadb.sh stop     stop the server started from the state directory
#                            (its pid file), if it runs; anything else on the
#                            port is left alone
#   demo-mariadb.sh status   exit 0 if the state directory's server runs
set -euo pipefail
cd "$(dirname "$0")/.."
port=${DEMO_MYSQL_PORT:-3307}
state=${DEMO_STATE:-$PWD/.state}
case "$state" in /*) ;; *) state=$PWD/$state ;; esac
data=$state/mariadb
pidfile=$state/mariadb.pid

# ours prints the pid of the server started from $state, if it runs.
ours() {
  [ -f "$pidfile" ] || return 1
  local pid
  pid=$(cat "$pidfile" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  # The pid must still be that mariadbd (a stale pid file may name another
  # process by now).
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "--datadir=$data " || return 1
  echo "$pid"
}

case "${1:-start}" in
status)
  ours >/dev/null; exit $? ;;
stop)
  if ! pid=$(ours); then
    echo "demo-mariadb: not running from $state"; exit 0
  fi
  echo "demo-mariadb: stopping pid $pid (127.0.0.1:$port, data in $data)"
  kill -TERM "$pid"
  for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || { echo "demo-mariadb: stopped"; exit 0; }
    sleep 0.1
  done
  echo "demo-mariadb: pid $pid did not stop within 30s; killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
  exit 0 ;;
start) ;;
*)
  echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac

mkdir -p "$state"
if mariadb -h127.0.0.1 -P"$port" -uroot -e 'SELECT 1' >/dev/null 2>&1; then
  if pid=$(ours); then
    echo "demo-mariadb: reusing the demo MariaDB already up on 127.0.0.1:$port (pid $pid, data in $data; 'make clean' stops it)"
  else
    echo "demo-mariadb: reusing a MariaDB already up on 127.0.0.1:$port that was NOT started from $state: it is used as it is and never stopped by the demo"
  fi
  exit 0
fi
if [ ! -d "$data/mysql" ]; then
  echo "demo-mariadb: initialising $data"
  mariadb-install-db --no-defaults --user=root --datadir="$data" --auth-root-authentication-method=normal \
    --skip-test-db >"$state/mariadb-install.log" 2>&1
fi
echo "demo-mariadb: starting on 127.0.0.1:$port"
nohup /usr/sbin/mariadbd --no-defaults --user=root --datadir="$data" --port="$port" --bind-address=127.0.0.1 \
  --socket="$state/mariadb.sock" --pid-file="$pidfile" --log-error="$state/mariadb.err" \
  --log-bin=binlog --binlog-format=ROW --binlog-row-image=FULL --server-id=3307 \
  --innodb-buffer-pool-size=256M --innodb-flush-log-at-trx-commit=2 --sync-binlog=0 \
  --skip-name-resolve >/dev/null 2>&1 &
for _ in $(seq 1 150); do
  if mariadb -h127.0.0.1 -P"$port" -uroot -e 'SELECT 1' >/dev/null 2>&1; then
    echo "demo-mariadb: up"; exit 0
  fi
  sleep 0.2
done
echo "demo-mariadb: did not start; see $state/mariadb.err" >&2
tail -20 "$state/mariadb.err" >&2 || true
exit 1
