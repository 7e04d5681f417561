#!/usr/bin/env bash
# Install and start every backend the test suite talks to, on a Debian machine.
#
# Idempotent: installs only what is missing, starts only what is not listening,
# so `make test` can run it every time. Needs root or sudo for apt-get and for
# starting the database servers.
#
#   ZooKeeper, memcached: Debian packages only; the tests start their own
#     throwaway servers on free ports (tests/servers.py).
#   prometheus (package prometheus): promtool checks the /metrics exposition
#     format and the alert rules; the prometheus server itself scrapes a real
#     daemon in tests/functional/test_prometheus_server.py (a throwaway one on
#     a free port: the package's own service is not needed).
#   wrk: the benchmark harness's HTTP load generator (tests/functional/test_bench.py).
#   haproxy: the load balancer in front of several daemons (tests/functional/test_several_daemons.py).
#   chromium, chromium-driver: the headless browser (and its WebDriver) the status page is
#     tested in (tests/functional/test_status_page.py, driven by selenium).
#   rabbitmq-server: the message bus the notifications are sent on; the tests start
#     their own throwaway broker on free ports (tests/servers.py RabbitMQServer),
#     so the package's own service is not needed.
#   PostgreSQL 5432, MariaDB 3306, Redis 6379: shared servers the tests use.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive

log() { printf 'install-test-backends: %s\n' "$*"; }

apt_updated=""
apt_install() {
    if [ -z "$apt_updated" ]; then
        log "apt-get update"
        $SUDO apt-get update -qq
        apt_updated=1
    fi
    log "apt-get install $*"
    $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

listening() {
    # bash's /dev/tcp: no client tool needed to ask whether a port answers.
    timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

wait_port() {
    local name=$1 port=$2 tries=120
    while ! listening "$port"; do
        tries=$((tries - 1))
        if [ "$tries" -le 0 ]; then
            log "$name is not listening on 127.0.0.1:$port after 60s" >&2
            exit 1
        fi
        sleep 0.5
    done
}

# -- packages -------------------------------------------------------------------

missing=()
[ -f /usr/share/java/zookeeper.jar ] || missing+=(zookeeper)
command -v memcached >/dev/null || missing+=(memcached)
{ command -v promtool && command -v prometheus; } >/dev/null || missing+=(prometheus)
command -v wrk >/dev/null || missing+=(wrk)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || missing+=(rabbitmq-server)
if [ ${#missing[@]} -gt 0 ]; then
    apt_install "${missing[@]}"
fi

fresh_postgresql="" fresh_mariadb=""
servers=()
if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    servers+=(postgresql)
    fresh_postgresql=1
fi
if [ ! -x /usr/sbin/mariadbd ]; then
    servers+=(mariadb-server)
    fresh_mariadb=1
fi
command -v redis-server >/dev/null || servers+=(redis-server)
if [ ${#servers[@]} -gt 0 ]; then
    apt_install "${servers[@]}"
fi

# -- servers --------------------------------------------------------------------

if ! listening 5432; then
    log "starting PostgreSQL"
    $SUDO pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start
fi
wait_port PostgreSQL 5432

if ! listening 3306; then
    log "starting MariaDB"
    $SUDO mkdir -p /run/mysqld
    $SUDO chown mysql:mysql /run/mysqld
    $SUDO start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
fi
wait_port MariaDB 3306

if ! listening 6379; then
    log "starting Redis"
    $SUDO mkdir -p /var/lib/redis /var/log/redis
    $SUDO redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
        --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
wait_port Redis 6379

# -- access for the tests, only on servers this script installed ------------------
# The tests connect as postgres and root over TCP without a password (see
# tests/conftest.py). A machine that came with these servers is already set up
# so; a fresh Debian install is not, and is opened to local connections only.

if [ -n "$fresh_postgresql" ]; then
    hba="/etc/postgresql/$(ls /etc/postgresql)/main/pg_hba.conf"
    if ! $SUDO grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
        log "PostgreSQL: trusting local TCP connections for the tests"
        $SUDO sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
        $SUDO pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main reload
    fi
fi
if [ -n "$fresh_mariadb" ]; then
    log "MariaDB: root without a password over local TCP, for the tests"
    $SUDO mariadb -e "ALTER USER root@localhost IDENTIFIED VIA mysql_native_password \
        USING PASSWORD('') OR unix_socket; FLUSH PRIVILEGES;"
fi

log "ZooKeeper, memcached, prometheus, promtool, chromium and rabbitmq-server installed; PostgreSQL, MariaDB, Redis listening"
