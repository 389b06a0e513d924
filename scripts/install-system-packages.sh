#!/usr/bin/env bash
# Install the Debian packages the test suite needs, if any is missing:
#   build tools + Open MPI (Horovod), Chromium + ChromeDriver (browser tests),
#   Slurm 22.05 + munge + MariaDB (the lab cluster of the Slurm tests), iproute2 (`ss`: what
#   the distributed tests' workers listen on),
#   dataset-fashion-mnist (the real Fashion-MNIST files, recompressed: the mirror tests),
#   PostgreSQL (the MLflow tracking server's database in the PostgreSQL test).
# As root it runs apt-get and checks that every package is installed afterwards. When it cannot
# install them (not root, apt-get failing, a package still missing) it exits 1 with one line
# naming the missing packages, so `make test` stops here instead of recording the step as done.
set -euo pipefail

packages=(
  build-essential cmake libopenmpi-dev openmpi-bin
  chromium chromium-driver
  slurmctld slurmd slurm-client munge libpmix2 slurmdbd mariadb-server
  iproute2
  dataset-fashion-mnist
  postgresql
)

# missing_packages: the packages of $packages that dpkg does not list as installed.
missing_packages() {
  local package
  for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
      || echo "$package"
  done
}

fail() { echo "install-system-packages: $*" >&2; exit 1; }

mapfile -t missing < <(missing_packages)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  fail "not root, cannot install the missing Debian packages: ${missing[*]} (as root: apt-get install ${missing[*]})"
fi
echo "install-system-packages: installing ${missing[*]}"
log=${TMPDIR:-/tmp}/afternoon-system-packages.log
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
  >"$log" 2>&1; then
  fail "apt-get could not install: ${missing[*]} (log: $log)"
fi
mapfile -t still < <(missing_packages)
if [ ${#still[@]} -ne 0 ]; then
  fail "still missing after apt-get install: ${still[*]} (log: $log)"
fi
