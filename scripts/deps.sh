#!/usr/bin/env bash
# Installs every Debian package Arbor needs to build, test and run.
# Used by .ci/run, by the README's run and test commands and by hand.
# Idempotent: skips apt entirely when everything is already installed.
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build pkg-config clang libclang-rt-14-dev
  # required by the design
  libsqlite3-dev sqlite3 libgrpc-dev protobuf-c-compiler libprotobuf-c-dev
  liburing-dev libjemalloc-dev
  # well-kept libraries instead of hand-written code
  libmicrohttpd-dev   # HTTP: /metrics, JSON status, SQL over HTTP
  libjansson-dev      # JSON
  libinih-dev         # configuration files
  libxxhash-dev       # checksums (XXH3)
  liblz4-dev          # page compression
  libcmocka-dev       # unit tests
  libssl-dev          # libcrypto: SHA-256/HMAC/PBKDF2 for SCRAM auth
  libcurl4-openssl-dev  # HTTP client: arbor-control -> computes, arbor -> arbor-control
  # test tooling: real SQL clients against the endpoints
  valgrind python3 procps chromium   # chromium: the dashboard test (headless)
  postgresql-client-15 postgresql-15   # psql, pgbench (and a server to compare with)
  python3-psycopg2 libpq-dev           # libpq-dev: the differential test drives libpq itself
  libcurl4-openssl-dev   # remote storage: S3 over HTTP with SigV4 (curl >= 7.75)
  python3-botocore       # tests: an independent SigV4 implementation to check signatures
  python3-yaml           # tests: deploy/prometheus/alerts.yml parses
  python3-sqlalchemy     # tests: SQLAlchemy (psycopg2 dialect) against the PostgreSQL endpoint
  sqlite3-tools          # sqldiff: test_cli_diff compares branch diff with it
  nftables util-linux    # nft, unshare: test_partition cuts links between daemons in its own netns
  # nodejs + npm (the dashboard and s3rver tests) are not listed: the tests
  # skip with a message when npm is missing.
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "deps: installing ${missing[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
