#!/usr/bin/env bash
# Tests Herald's Debian package on this machine, as an operator uses it: builds it (scripts/package.sh --test),
# installs it with dpkg, runs the installed binary (`--version`, `check` of the shipped configuration, a server run
# as the service user), checks the user, the file modes and the conffile, has `systemd-analyze verify` judge the
# unit, upgrades it over itself keeping a changed configuration, and purges it. Needs root (CI runs as root).
set -euo pipefail
cd "$(dirname "$0")/.."

passed=0
failed=0
check() {
  local name="$1"
  shift
  if "$@"; then
    passed=$((passed + 1))
    echo "  ok   $name"
  else
    failed=$((failed + 1))
    echo "  FAIL $name" >&2
  fi
}

if [ "$(id -u)" -ne 0 ]; then
  echo "test-package: SKIPPED: installing a package needs root; run as root (CI does)" >&2
  exit 0
fi
if dpkg -s herald >/dev/null 2>&1; then
  echo "test-package: a herald package is already installed here; not touching it" >&2
  exit 1
fi
if ! command -v systemd-analyze >/dev/null; then
  echo "test-package: installing systemd (for systemd-analyze and systemd-sysusers)"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q systemd
fi

deb="$(scripts/package.sh --test | tail -1)"
echo "test-package: $deb ($(du -h "$deb" | cut -f1))"
cleanup() {
  [ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null || true
  dpkg --purge herald >/dev/null 2>&1 || true
  rm -rf "${credentials:-/nonexistent}"
}
trap cleanup EXIT

dpkg -i "$deb" >/dev/null
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
unit=/usr/lib/systemd/system/herald.service
[ -f "$unit" ] || unit=/lib/systemd/system/herald.service

check "herald --version is the workspace's version" test "$(herald --version)" = "herald $version"
check "herald check accepts the shipped configuration" herald check --config /etc/herald/herald.toml
check "the configuration is a conffile" sh -c "dpkg-query -W -f='\${Conffiles}' herald | grep -q '/etc/herald/herald.toml'"
check "the configuration is root's alone (0600)" test "$(stat -c '%a %U' /etc/herald/herald.toml)" = "600 root"
check "the service user exists, without a shell" sh -c "getent passwd herald | grep -q ':/var/lib/herald:/usr/sbin/nologin$'"
check "the unit is installed and enabled" test -L /etc/systemd/system/multi-user.target.wants/herald.service
# verify exits 0 on a warning (an unknown or misspelt key is only "ignoring"): a clean unit prints nothing.
verify_unit() {
  local out
  out="$(systemd-analyze verify "$unit" 2>&1)" && [ -z "$out" ] && return 0
  echo "$out" >&2
  return 1
}
check "systemd-analyze verify accepts the unit without a warning" verify_unit
for setting in "User=herald" "NoNewPrivileges=yes" "ProtectSystem=strict" "StateDirectory=herald" "LimitNOFILE=262144"; do
  check "the unit sets $setting" grep -qx "$setting" "$unit"
done

# The server as the service runs it: the configuration handed over as a credential, the unprivileged user.
credentials="$(mktemp -d)"
cp /etc/herald/herald.toml "$credentials/herald.toml"
chown -R herald:herald "$credentials"
chmod 0500 "$credentials"
chmod 0400 "$credentials/herald.toml"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
runuser -u herald -- herald serve --config "$credentials/herald.toml" --listen "127.0.0.1:$port" 2>/dev/null &
server_pid=$!
healthy() {
  for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:$port/healthz" 2>/dev/null | grep -q '"ok"'; then return 0; fi
    sleep 0.1
  done
  return 1
}
check "the installed server answers /healthz as the service user" healthy
kill "$server_pid"
wait "$server_pid" 2>/dev/null || true
server_pid=

echo '# changed by test-package' >>/etc/herald/herald.toml
dpkg -i --force-confold "$deb" >/dev/null
check "an upgrade keeps a changed configuration" grep -qx '# changed by test-package' /etc/herald/herald.toml
check "herald check still passes after the upgrade" herald check --config /etc/herald/herald.toml

dpkg --purge herald >/dev/null
check "purging removes the binary and the configuration" sh -c "! test -e /usr/bin/herald && ! test -e /etc/herald/herald.toml"

echo "test-package: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
