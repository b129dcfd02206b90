# shellcheck shell=bash
# Throwaway PostgreSQL server for tests and local development.
#
# Usage (from a bash script):
#
#   source scripts/lib/postgres.sh
#   herald_pg_start || exit 1
#   trap herald_pg_stop EXIT        # optional, recommended
#   swift test
#   herald_pg_stop
#
# herald_pg_start
#   Does nothing when HERALD_POSTGRES is already set (an external server is in use).
#   Otherwise it creates a cluster in a fresh temp dir with the newest
#   /usr/lib/postgresql/*/bin (override with HERALD_PG_BIN=/path/to/bin), runs it
#   as the `postgres` user when called as root, listens on a unix socket only
#   (listen_addresses=''), creates database `herald`, and exports:
#     HERALD_POSTGRES  libpq key=value conninfo: "host=SOCKDIR port=PORT user=postgres dbname=herald"
#     HERALD_PG_DATA   the data directory
#     HERALD_PG_CTL    an executable wrapper around pg_ctl for this cluster: it already
#                      passes -D, -l and the server options and switches to the postgres
#                      user when needed, so `"$HERALD_PG_CTL" stop -m fast`,
#                      `"$HERALD_PG_CTL" start` and `"$HERALD_PG_CTL" restart -m fast` work
#                      from any process (tests use it to simulate a database restart).
#     HERALD_PG_BIN    the PostgreSQL bin directory that was used
#     HERALD_PG_PORT, HERALD_PG_SOCKDIR
# herald_pg_stop
#   Stops the server and removes the temp dir, only if herald_pg_start in this shell
#   started it; unsets the variables it exported. Safe to call twice.
#
# The socket directory lives under /tmp (not $TMPDIR) because unix socket paths are
# limited to ~107 bytes.

_herald_pg_log() { printf 'herald-postgres: %s\n' "$*" >&2; }

# Prints the newest PostgreSQL bin directory that has initdb and pg_ctl.
_herald_pg_find_bin() {
    if [ -n "${HERALD_PG_BIN:-}" ]; then
        if [ -x "$HERALD_PG_BIN/initdb" ] && [ -x "$HERALD_PG_BIN/pg_ctl" ]; then
            printf '%s\n' "$HERALD_PG_BIN"
            return 0
        fi
        _herald_pg_log "HERALD_PG_BIN=$HERALD_PG_BIN has no initdb/pg_ctl"
        return 1
    fi
    local dir best="" best_ver=-1 ver
    for dir in /usr/lib/postgresql/*/bin; do
        [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] || continue
        ver=${dir#/usr/lib/postgresql/}
        ver=${ver%%/*}
        ver=${ver%%.*}
        case $ver in '' | *[!0-9]*) continue ;; esac
        if [ "$ver" -gt "$best_ver" ]; then
            best_ver=$ver
            best=$dir
        fi
    done
    if [ -z "$best" ]; then
        _herald_pg_log "no PostgreSQL server binaries found (looked for /usr/lib/postgresql/*/bin/initdb and pg_ctl)."
        _herald_pg_log "install them first, e.g.: apt-get install -y postgresql  (or set HERALD_POSTGRES to an existing server)"
        return 1
    fi
    printf '%s\n' "$best"
}

# Prints a TCP port that is free right now.
_herald_pg_free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()' && return 0
    fi
    local port used
    used=$(ss -Htan 2>/dev/null | awk '{print $4}' | sed 's/.*://')
    for port in $(seq 25432 26432); do
        if ! printf '%s\n' "$used" | grep -qx "$port"; then
            printf '%s\n' "$port"
            return 0
        fi
    done
    _herald_pg_log "could not find a free port"
    return 1
}

herald_pg_start() {
    if [ -n "${HERALD_POSTGRES:-}" ]; then
        return 0
    fi
    local bin port dir data sockdir opts pgctl
    bin=$(_herald_pg_find_bin) || return 1

    local -a as_pg=()
    if [ "$(id -u)" = 0 ]; then
        if ! id -u postgres >/dev/null 2>&1; then
            _herald_pg_log "running as root but there is no 'postgres' user (the Debian postgresql package creates it)"
            return 1
        fi
        as_pg=(runuser -u postgres --)
    fi

    dir=$(mktemp -d /tmp/herald-pg.XXXXXX) || { _herald_pg_log "mktemp failed"; return 1; }
    if [ ${#as_pg[@]} -gt 0 ]; then
        chown postgres: "$dir" || { _herald_pg_log "chown postgres $dir failed"; rm -rf "$dir"; return 1; }
    fi
    data=$dir/data
    sockdir=$dir

    if ! (cd "$dir" && "${as_pg[@]}" "$bin/initdb" -D "$data" -A trust -U postgres --no-sync \
        -E UTF8 --no-locale >"$dir/initdb.log" 2>&1); then
        _herald_pg_log "initdb failed:"
        cat "$dir/initdb.log" >&2
        rm -rf "$dir"
        return 1
    fi

    port=$(_herald_pg_free_port) || { rm -rf "$dir"; return 1; }
    opts="-p $port -k $sockdir -c listen_addresses='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off"

    # A pg_ctl wrapper bound to this cluster, usable by tests (which may run as root).
    pgctl=$dir/pg_ctl
    {
        printf '#!/bin/sh\n'
        printf '# pg_ctl for the throwaway Herald PostgreSQL cluster in %s\n' "$dir"
        printf 'cd %q || exit 1\n' "$dir"
        printf 'exec'
        [ ${#as_pg[@]} -gt 0 ] && printf ' %q' "${as_pg[@]}"
        printf ' %q' "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -w -o "$opts"
        printf ' "$@"\n'
    } >"$pgctl"
    chmod 755 "$pgctl"

    if ! "$pgctl" start >"$dir/pg_ctl.log" 2>&1; then
        _herald_pg_log "pg_ctl start failed:"
        cat "$dir/pg_ctl.log" "$dir/server.log" >&2 2>/dev/null
        rm -rf "$dir"
        return 1
    fi

    if ! (cd "$dir" && "${as_pg[@]}" "$bin/createdb" -h "$sockdir" -p "$port" -U postgres herald) >>"$dir/pg_ctl.log" 2>&1; then
        _herald_pg_log "createdb herald failed:"
        cat "$dir/pg_ctl.log" >&2
        "$pgctl" stop -m immediate >/dev/null 2>&1
        rm -rf "$dir"
        return 1
    fi

    export HERALD_POSTGRES="host=$sockdir port=$port user=postgres dbname=herald"
    export HERALD_PG_DATA=$data
    export HERALD_PG_CTL=$pgctl
    export HERALD_PG_BIN=$bin
    export HERALD_PG_PORT=$port
    export HERALD_PG_SOCKDIR=$sockdir
    _HERALD_PG_OWNED_DIR=$dir
    _herald_pg_log "started PostgreSQL ($bin) in $dir: $HERALD_POSTGRES"
}

herald_pg_stop() {
    local dir=${_HERALD_PG_OWNED_DIR:-}
    [ -n "$dir" ] || return 0
    if [ -x "$dir/pg_ctl" ]; then
        "$dir/pg_ctl" stop -m fast >/dev/null 2>&1 || "$dir/pg_ctl" stop -m immediate >/dev/null 2>&1
    fi
    case $dir in
        /tmp/herald-pg.*) rm -rf "$dir" ;;
    esac
    unset HERALD_POSTGRES HERALD_PG_DATA HERALD_PG_CTL HERALD_PG_BIN HERALD_PG_PORT HERALD_PG_SOCKDIR
    unset _HERALD_PG_OWNED_DIR
}
