# Shared set-up steps for scripts/*.sh. Source it; every function is idempotent.

# The wasm target guests build for.
ensure_wasm_target() {
    if ! command -v rustup >/dev/null 2>&1; then
        echo "error: rustup is not installed; install the Rust toolchain from https://rustup.rs" >&2
        return 1
    fi
    if ! rustup target list --installed | grep -qx wasm32-wasip2; then
        echo "==> adding the wasm32-wasip2 target"
        rustup target add wasm32-wasip2
    fi
}

# A PostgreSQL server on 127.0.0.1:5432, started if it is installed but down.
ensure_postgres() {
    local host=${PGHOST_CHECK:-127.0.0.1} port=${PGPORT_CHECK:-5432}
    if pg_isready -q -h "$host" -p "$port" 2>/dev/null; then
        return 0
    fi
    if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
        echo "==> starting PostgreSQL"
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start
        for _ in $(seq 1 30); do
            pg_isready -q -h "$host" -p "$port" && return 0
            sleep 1
        done
    fi
    echo "error: no PostgreSQL answers on $host:$port. Install and start PostgreSQL 15+" \
         "(Debian: apt-get install postgresql), or set DATABASE_URL to a server you can use." >&2
    return 1
}

default_database_url() {
    export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
}

# Debian packages the tests use as real peers (prometheus: the scrape test), installed once.
# Each argument is "command:package".
ensure_debian_packages() {
    local missing=() pair
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "==> installing Debian packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    # No service is started: the tests run their own instances on loopback ports.
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" \
        || { $sudo apt-get update -q && $sudo env DEBIAN_FRONTEND=noninteractive \
             apt-get install -y --no-install-recommends "${missing[@]}"; }
}
