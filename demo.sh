#!/usr/bin/env bash
# Builds two example image layers, stacks them under a writable upper with
# unionfs, shows the merged view and copy-on-write at work, and unmounts.
set -euo pipefail
BIN=$(realpath "${1:-bin/unionfs}")
DATA=$(realpath -m demo-data)

if [ ! -c /dev/fuse ]; then
	echo "demo: /dev/fuse is missing: load the fuse module (modprobe fuse)" >&2
	exit 1
fi
if [ "$(id -u)" != 0 ] && ! command -v fusermount3 >/dev/null; then
	echo "demo: mounting without root needs fusermount3: sudo apt-get install fuse3" >&2
	exit 1
fi

if mountpoint -q "$DATA/merged" 2>/dev/null; then "$BIN" umount "$DATA/merged"; fi
rm -rf "$DATA"
mkdir -p "$DATA"/{base,app,upper,merged}
cd "$DATA"

# Layer 1, "base": a tiny OS image.
mkdir -p base/etc base/bin base/usr/share/doc base/var/log
printf 'NAME="Demo Linux"\nVERSION="1.0"\n' > base/etc/os-release
echo "Welcome to the base image" > base/etc/motd
printf '#!/bin/sh\necho hello from the base layer\n' > base/bin/hello
chmod 755 base/bin/hello
echo "base documentation" > base/usr/share/doc/README
echo "old log" > base/var/log/old.log

# Layer 2, "app": adds an application and replaces the motd.
mkdir -p app/etc app/opt/app
echo "Welcome to the app image (replaces the base motd)" > app/etc/motd
echo 'print("app")' > app/opt/app/main.py
echo "setting=1" > app/opt/app/config

"$BIN" mount --lower app:base --upper upper merged
trap '"$BIN" umount "$DATA/merged" 2>/dev/null || true' EXIT

echo "== layers: app (top) over base; upper is writable; merged view:"
(cd merged && find . -mindepth 1 | sort | sed 's/^\.\///')
echo
echo "== merged/etc/motd comes from the topmost layer that has it:"
cat merged/etc/motd
echo
echo "== write to a lower file: it is copied up, the layer stays untouched"
echo "setting=2" > merged/opt/app/config
echo "merged: $(cat merged/opt/app/config)   app layer: $(cat app/opt/app/config)   upper: $(cat upper/opt/app/config)"
echo
echo "== delete a lower file: a whiteout is recorded in upper/.unionfs/state.db, no marker file"
rm merged/var/log/old.log
ls merged/var/log | sed 's/^/merged\/var\/log: /' || true
echo "merged/var/log is now empty; base/var/log still has: $(ls base/var/log)"
echo "upper holds: $(cd upper && find . -mindepth 1 -not -path './.unionfs*' | sort | tr '\n' ' ')"
echo
echo "== mount table:"
grep " $DATA/merged " /proc/mounts
"$BIN" umount merged
trap - EXIT
echo
echo "== unmounted; remounting shows the same union:"
"$BIN" mount --lower app:base --upper upper merged
(cd merged && ls var/log && cat opt/app/config)
"$BIN" umount merged
echo "demo data left in $DATA (make clean removes it)"
