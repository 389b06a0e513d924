#!/usr/bin/env bash
# Install the Debian packages the test suite needs, if any is missing:
#   build tools + Open MPI (Horovod), Chromium + ChromeDriver (browser tests),
#   Slurm 22.05 + munge + MariaDB (the lab cluster of the Slurm tests).
# As root it runs apt-get; otherwise it lists what is missing (those tests then skip, saying why).
set -euo pipefail

packages=(
  build-essential cmake libopenmpi-dev openmpi-bin
  chromium chromium-driver
  slurmctld slurmd slurm-client munge libpmix2 slurmdbd mariadb-server
)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-system-packages: not root; missing Debian packages: ${missing[*]}" >&2
  echo "install-system-packages: the tests that need them will be skipped" >&2
  exit 0
fi
echo "install-system-packages: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
