# Shared helpers for the set-up scripts (sourced, not run).
# Everything is idempotent: a second run on a set-up machine installs nothing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${AUTHGATE_VENV:-$ROOT/.venv}"
TOOLS_BIN="$ROOT/.tools/bin"
mkdir -p "$TOOLS_BIN"
export PATH="$TOOLS_BIN:$VENV/bin:$PATH"

log() { printf '[setup] %s\n' "$*" >&2; }

_apt_updated=0
# apt_install PKG...: installs the Debian packages that are not installed yet.
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if [ "$_apt_updated" -eq 0 ]; then
    log "apt-get update"
    $sudo apt-get update -qq
    _apt_updated=1
  fi
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# pip_install SPEC...: installs Python packages into the project's virtualenv.
pip_install() {
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@"
}
