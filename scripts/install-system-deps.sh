#!/usr/bin/env bash
# Installs the Debian packages nfvha's demo, tests and verification use.
# Idempotent: installs only what is missing. Without root it only reports.
set -u
PKGS=(
  socat procps iproute2 curl     # demo, guest tests, network namespaces
  qemu-system-x86 linux-image-cloud-amd64 busybox-static qemu-guest-agent   # real virtio-serial test VM (qemu-ga copied into it)
  libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients   # libvirt instance source, recovery
  libvirt-dev pkg-config gcc python3-dev   # pip builds libvirt-python against the system libvirt
  haproxy keepalived pacemaker corosync crmsh stress-ng    # VIM HA verification
  openssh-server nftables        # verification nodes over SSH, port-drop attacker
  systemd                        # systemd-analyze checks the units in etc/systemd
  prometheus                     # promtool checks and unit-tests etc/prometheus rules
  rabbitmq-server                # the bus (already running on dev/CI machines)
  graphviz chromium              # KAOS diagrams, report check in a headless browser
)
# Real Keystone and Masakari (PyPI) for tests/test_real_*.py, in a venv of
# their own (scripts/install-openstack.sh; the test fixtures call it too,
# instant once installed). Here so the minutes of a first install are not
# spent inside a test's time limit.
if [ "$(id -u)" = 0 ]; then
  bash "$(dirname "$0")/install-openstack.sh" >/dev/null ||
    echo "nfvha: Keystone/Masakari not installed; tests/test_real_* will say why" >&2
fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "nfvha: not root; missing system packages (tests needing them will skip): ${missing[*]}" >&2
  exit 0
fi
echo "nfvha: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
