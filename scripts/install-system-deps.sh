#!/usr/bin/env bash
# Installs the Debian packages the tests talk to. Only runs apt-get when something is missing,
# and only as root; otherwise it names what is missing and the tests that need it fail loudly.
set -euo pipefail

PACKAGES=(postgresql cups-ipp-utils cups cups-client avahi-daemon avahi-utils dbus rlpr iproute2 snmpd snmp slapd ldap-utils ghostscript cups-filters util-linux chromium)

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "missing system packages: ${missing[*]} (run 'make test' as root, or install them)" >&2
    exit 0
fi

echo "installing system packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
