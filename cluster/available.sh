#!/bin/bash
# Exit 0 if up.sh can set up the cluster here; else print why and exit 1.
if [[ $(id -u) != 0 ]]; then
    echo "cluster unavailable: not root"; exit 1
fi
if ! command -v apt-get >/dev/null || ! command -v dpkg-query >/dev/null; then
    echo "cluster unavailable: no apt-get (not Debian-like)"; exit 1
fi
exit 0
