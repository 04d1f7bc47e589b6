#!/usr/bin/env bash
# Starts (if not already up) the demo's private MariaDB: binlog on, ROW
# format, FULL row image, GTIDs, on 127.0.0.1:${DEMO_MYSQL_PORT:-3307} with
# its data in .state/mariadb. It never touches the machine's MariaDB on 3306.
set -euo pipefail
cd "$(dirname "$0")/.."
port=${DEMO_MYSQL_PORT:-3307}
state=$PWD/.state
data=$state/mariadb
mkdir -p "$state"
if mariadb -h127.0.0.1 -P"$port" -uroot -e 'SELECT 1' >/dev/null 2>&1; then
  echo "demo-mariadb: already up on 127.0.0.1:$port"; exit 0
fi
if [ ! -d "$data/mysql" ]; then
  echo "demo-mariadb: initialising $data"
  mariadb-install-db --no-defaults --user=root --datadir="$data" --auth-root-authentication-method=normal \
    --skip-test-db >"$state/mariadb-install.log" 2>&1
fi
echo "demo-mariadb: starting on 127.0.0.1:$port"
nohup /usr/sbin/mariadbd --no-defaults --user=root --datadir="$data" --port="$port" --bind-address=127.0.0.1 \
  --socket="$state/mariadb.sock" --pid-file="$state/mariadb.pid" --log-error="$state/mariadb.err" \
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
