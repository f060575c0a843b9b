#!/usr/bin/env bash
# Installs the real OpenStack services the tests run against (PyPI keystone
# and masakari, gunicorn to serve them, PyMySQL for MariaDB) into their own
# virtualenv: their pinned oslo.* versions differ from nfvha's.
# Versions: scripts/openstack-constraints.txt (a freeze of a working set).
# Idempotent: a venv already holding this set is left as it is (instant).
# Prints the venv's path on its last line.
# NFVHA_OPENSTACK_VENV overrides the place (default /opt/nfvha-openstack/venv
# as root, ~/.cache/nfvha-openstack/venv otherwise).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
constraints="$here/openstack-constraints.txt"
if [ -n "${NFVHA_OPENSTACK_VENV:-}" ]; then
  venv="$NFVHA_OPENSTACK_VENV"
elif [ "$(id -u)" = 0 ]; then
  venv=/opt/nfvha-openstack/venv
else
  venv="${XDG_CACHE_HOME:-$HOME/.cache}/nfvha-openstack/venv"
fi
python="${PYTHON:-python3}"
stamp="$venv/.nfvha-installed"
want="$(sha256sum "$constraints" | cut -d' ' -f1) $("$python" -c 'import sys; print(sys.version.split()[0])')"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "$venv"
  exit 0
fi
echo "nfvha: installing Keystone and Masakari into $venv" >&2
"$python" -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check -c "$constraints" \
  keystone masakari gunicorn PyMySQL >&2
"$venv/bin/keystone-manage" --version >/dev/null 2>&1
echo "$want" > "$stamp"
echo "$venv"
