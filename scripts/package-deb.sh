#!/usr/bin/env bash
# Builds the Debian package of dtlsd with cargo-deb and prints its path
# (target/debian/dtlsd_VERSION-1_ARCH.deb): the release binary, its manual page (generated
# by `dtlsd manpage` from the command line's own help), the systemd units and the
# configurations of control/dtlsd/deploy/, and the operator docs. Metadata:
# [package.metadata.deb] in control/dtlsd/Cargo.toml. Installs cargo-deb when missing.
#
#   scripts/package-deb.sh            # prints the .deb's path on stdout (logs on stderr)
#   dpkg -i "$(scripts/package-deb.sh)"
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version >/dev/null 2>&1; then
    echo "installing cargo-deb $CARGO_DEB_VERSION (cargo install)" >&2
    cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION" >&2
fi
cargo build --release --locked -q -p dtlsd >&2
target/release/dtlsd manpage | gzip -9n >target/release/dtlsd.1.gz
cargo deb -p dtlsd --no-build --locked --output target/debian/ >&2
ls -t target/debian/dtlsd_*.deb | head -n 1
