#!/usr/bin/env bash
# Checks a dtlsd .deb (scripts/package-deb.sh) without installing it on this host: unpacks
# it into a scratch root (dpkg-deb -x), checks the control fields and the files it ships,
# runs the packaged binary's --version and manual page, and `check-config` on both shipped
# configurations once a test PKI is written beside them. Exits non-zero naming the first
# problem.
#
#   scripts/check-deb.sh target/debian/dtlsd_0.1.0-1_amd64.deb
set -euo pipefail
deb=${1:?usage: scripts/check-deb.sh PACKAGE.deb}
[ -f "$deb" ] || { echo "error: $deb not found" >&2; exit 1; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
fail() { echo "error: $deb: $*" >&2; exit 1; }

dpkg-deb -x "$deb" "$root"
dpkg-deb -e "$deb" "$root/DEBIAN"
field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = dtlsd ] || fail "Package is $(field Package)"
field Depends | grep -q adduser || fail "Depends lacks adduser: $(field Depends)"
[ -x "$root/DEBIAN/postinst" ] || fail "no postinst (it creates the dtlsd user)"
grep -q '^/etc/dtlsd/serve.toml$' "$root/DEBIAN/conffiles" || fail "serve.toml is not a conffile"

for f in usr/bin/dtlsd \
    lib/systemd/system/dtlsd-serve@.service lib/systemd/system/dtlsd-connect@.service \
    lib/systemd/system/dtlsd-serve@.socket \
    etc/dtlsd/serve.toml etc/dtlsd/connect.toml usr/share/man/man1/dtlsd.1.gz \
    usr/share/doc/dtlsd/dtlsd.md usr/share/doc/dtlsd/operations.md; do
    [ -e "$root/$f" ] || fail "missing /$f"
done

bin="$root/usr/bin/dtlsd"
version=$("$bin" --version)
want="dtlsd $(field Version | sed 's/-[0-9]*$//')"
[ "$version" = "$want" ] || fail "--version says '$version', the package '$want'"
zcat "$root/usr/share/man/man1/dtlsd.1.gz" | grep -q '^\.SH "DTLSD SERVE"' \
    || fail "the manual page has no 'dtlsd serve' section"

# The shipped configurations name server.pem/server.key/ca.pem beside them.
"$bin" certs --out "$root/etc/dtlsd" >/dev/null
for config in serve connect; do
    out=$("$bin" check-config "$root/etc/dtlsd/$config.toml") \
        || fail "check-config of the shipped $config.toml failed"
    case "$out" in *"ok ($config config)"*) ;; *) fail "check-config said: $out" ;; esac
done
echo "$deb: ok ($version; $(dpkg-deb -c "$deb" | wc -l) entries)"
