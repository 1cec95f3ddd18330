"""The ledger's PostgreSQL image: Debian's ``postgresql`` on the same mmdebstrap base.

The chart's evaluation PostgreSQL (``postgresql.enabled``) is written for the official
``postgres`` image's interface, so this image keeps it and a user with a registry can
swap one for the other:

* user ``postgres`` is uid/gid 999 (made before ``postgresql-common`` installs, which
  then keeps it), and the pod runs as 999 with a read-only root filesystem: only
  ``$PGDATA``'s volume, ``/var/run/postgresql`` and ``/tmp`` are written;
* ``docker-entrypoint.sh`` does what the official one does on an empty data
  directory: ``initdb`` as ``$POSTGRES_USER`` with ``$POSTGRES_PASSWORD``, password
  (SCRAM) authentication for every TCP client and trust on the pod's own socket,
  ``$POSTGRES_DB`` created, then every ``/docker-entrypoint-initdb.d/*.sh`` (run when
  executable, else sourced) and ``*.sql`` against a server listening on the socket
  only; then ``exec postgres`` listening on every address, port ``$PGPORT``.

Debian creates no cluster here (its ``main`` cluster is removed from the image):
the entrypoint's data directory is the only one.
"""

from __future__ import annotations

PG_MAJOR = "15"  # bookworm's PostgreSQL
PACKAGES = (f"postgresql-{PG_MAJOR}", "ca-certificates")
RECIPE = 1  # bump when the mmdebstrap command or the entrypoint's contract changes
BIN_DIR = f"/usr/lib/postgresql/{PG_MAJOR}/bin"
PATH = f"{BIN_DIR}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ENTRYPOINT_PATH = "/usr/local/bin/docker-entrypoint.sh"

#: mmdebstrap hooks (run on the host with the chroot as $1). minbase has no useradd
#: (passwd is not Essential): the entries are written as useradd would.
ESSENTIAL_HOOKS = tuple(
    f"echo '{line}' >> \"$1/etc/{name}\""
    for name, line in (
        ("passwd", "postgres:x:999:999:PostgreSQL administrator:/var/lib/postgresql:/bin/bash"),
        ("shadow", "postgres:*:20000:0:99999:7:::"),
        ("group", "postgres:x:999:"),
        ("gshadow", "postgres:!::"),
    )
)
CUSTOMIZE_HOOKS = (
    f'rm -rf "$1/etc/postgresql/{PG_MAJOR}/main" "$1/var/lib/postgresql/{PG_MAJOR}/main"',
    # /var/run is a link to /run (never follow it from outside the chroot).
    'mkdir -p "$1/var/lib/postgresql/data" "$1/run/postgresql"',
    'chown -R 999:999 "$1/var/lib/postgresql" "$1/run/postgresql"',
    'chmod 2775 "$1/run/postgresql"',
)

ENTRYPOINT = r"""#!/bin/sh
# The official postgres image's entrypoint contract, for Debian's PostgreSQL.
set -eu
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
    set -- postgres "$@"
fi
if [ "$1" != postgres ]; then
    exec "$@"
fi
: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
export PGDATA POSTGRES_USER POSTGRES_DB
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "docker-entrypoint: POSTGRES_PASSWORD is required on an empty data directory" >&2
        exit 1
    fi
    mkdir -p "$PGDATA"
    chmod 0700 "$PGDATA"
    pwfile="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust \
        --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 ${POSTGRES_INITDB_ARGS:-}
    rm -f "$pwfile"
    printf "\nhost all all all scram-sha-256\n" >> "$PGDATA/pg_hba.conf"
    printf "\nlisten_addresses = '*'\n" >> "$PGDATA/postgresql.conf"
    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p ${PGPORT:-5432}" -w start
    if [ "$POSTGRES_DB" != postgres ]; then
        psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
            --set db="$POSTGRES_DB" <<'SQL'
CREATE DATABASE :"db";
SQL
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        case "$f" in
            *.sh)
                echo "docker-entrypoint: running $f"
                if [ -x "$f" ]; then "$f"; else . "$f"; fi
                ;;
            *.sql)
                echo "docker-entrypoint: running $f"
                psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -f "$f"
                ;;
            *) ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop
    echo "docker-entrypoint: initialised $PGDATA"
fi
shift
exec postgres "$@"
"""
