# Installs what Herald needs to build and test, when it is missing. Source it, then call
# herald_install_deps. Debian packages only (bookworm): librdkafka, libpq, PostgreSQL.

herald_install_deps() {
  local missing=()
  command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
  if command -v pkg-config >/dev/null 2>&1; then
    pkg-config --exists rdkafka 2>/dev/null || missing+=(librdkafka-dev)
    pkg-config --exists libpq 2>/dev/null || missing+=(libpq-dev)
  else
    missing+=(librdkafka-dev libpq-dev)
  fi
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
  command -v python3 >/dev/null 2>&1 || missing+=(python3)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if ! command -v swift >/dev/null 2>&1; then
    echo "error: swift is not on PATH (Herald needs Swift 6)" >&2
    return 1
  fi
}
