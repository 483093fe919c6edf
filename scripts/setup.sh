# Sourced by scripts/demo and scripts/test: make a fresh Debian machine ready
# (Docker engine, debootstrap, iptables, a running dockerd) and point cargo at a
# build cache outside the clone so repeated runs reuse it.
set -euo pipefail

say() { printf '==> %s\n' "$*" >&2; }

need_pkgs=()
command -v dockerd >/dev/null 2>&1 || need_pkgs+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || need_pkgs+=(debootstrap)
command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ] || need_pkgs+=(iptables)
command -v mvn >/dev/null 2>&1 || need_pkgs+=(maven)          # resolves Kafka's jars for the offline image
command -v make >/dev/null 2>&1 || need_pkgs+=(build-essential) # librdkafka is built from source by rdkafka-sys
# pip builds LocalStack's wheels for the offline S3 image, in a venv of its own.
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_pkgs+=(python3-venv)
# The edge tests ask Route 53 and the ALB the way a user does, with dig and curl.
command -v dig >/dev/null 2>&1 || need_pkgs+=(bind9-dnsutils)
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    say "missing packages: ${need_pkgs[*]}; install them with: sudo apt-get install -y ${need_pkgs[*]}"
    exit 1
  fi
  say "installing ${need_pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v dockerd >/dev/null 2>&1; then
    say "starting dockerd (log: /var/log/voyager-sim-dockerd.log)"
    setsid dockerd >>/var/log/voyager-sim-dockerd.log 2>&1 < /dev/null &
    for _ in $(seq 1 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
    docker info >/dev/null 2>&1 || { say "dockerd did not come up; see /var/log/voyager-sim-dockerd.log"; exit 1; }
  else
    say "no Docker engine is running; start it (e.g. sudo systemctl start docker) and retry"
    exit 1
  fi
fi

# Docker 20.10 (Debian 12's) can deadlock in libnetwork when many containers
# exit at once (moby/moby#46661): it still answers `info`, but every network
# call hangs. A dockerd we may restart is restarted; nothing else cures it.
if ! timeout 20 docker network ls >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && pgrep -x dockerd >/dev/null; then
    say "dockerd answers but its network calls hang (moby/moby#46661); restarting it"
    pkill -x dockerd
    for _ in $(seq 1 60); do pgrep -x dockerd >/dev/null || break; sleep 0.5; done
    setsid dockerd >>/var/log/voyager-sim-dockerd.log 2>&1 < /dev/null &
    for _ in $(seq 1 120); do timeout 5 docker network ls >/dev/null 2>&1 && break; sleep 0.5; done
    timeout 20 docker network ls >/dev/null 2>&1 || { say "dockerd still hangs; see /var/log/voyager-sim-dockerd.log"; exit 1; }
  else
    say "Docker's network calls hang (moby/moby#46661?); restart the Docker engine and retry"
    exit 1
  fi
fi

if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || { say "cargo is not installed; install Rust (rustup) first"; exit 1; }

# One build cache per machine, outside any clone: CI clones afresh each run.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/voyager-sim/target}"
mkdir -p "$CARGO_TARGET_DIR"
