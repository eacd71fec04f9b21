#!/bin/sh
# PostgreSQL from Debian's packages, as a container's program: the data directory is a volume,
# initialised on the first start (trust inside the VI's network: the cloud's rules decide who
# reaches port 5432), then the server runs in the foreground. Runtime files go to /dev/shm, so
# the root filesystem stays read-only.
set -e
PGBIN=/usr/lib/postgresql/15/bin
: "${PGDATA:=/var/lib/postgresql/data}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  # 1 MiB WAL segments: a live move re-sends the segment being written, not 16 MiB of it.
  "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth=trust --no-locale -E UTF8 --wal-segsize=1 >/dev/null 2>&1
  echo "host all all 0.0.0.0/0 trust" >>"$PGDATA/pg_hba.conf"
fi
exec "$PGBIN/postgres" -D "$PGDATA" -c listen_addresses='*' -c jit=off -c shared_buffers=32MB \
  -c unix_socket_directories=/dev/shm -c logging_collector=off -c dynamic_shared_memory_type=posix
