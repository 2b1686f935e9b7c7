#!/bin/sh
# Install the relay into its own virtualenv: the steps of the container image (deploy/Dockerfile), also
# usable on a host (then run it with deploy/wslarkbot.service). A test runs this script in a fresh
# directory, so the image's install steps are tested although no Docker engine is at hand.
#
#   sh deploy/install.sh PREFIX SOURCE
#     PREFIX  where the virtualenv goes (e.g. /opt/wslarkbot); its bin/wslarkbot is the relay
#     SOURCE  a checkout of this repository, or a built wheel (wslarkbot-*.whl)
#   PYTHON    the interpreter to use (default python3, 3.10 or newer)
#   EXTRAS    the extras to install (default relay,redis: the relay, and Redis for several nodes)
set -eu

prefix=${1:?usage: install.sh PREFIX SOURCE}
source=${2:?usage: install.sh PREFIX SOURCE}
python=${PYTHON:-python3}
extras=${EXTRAS:-relay,redis}

"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || {
    echo "install.sh: $python is older than Python 3.10" >&2
    exit 1
}
"$python" -m venv "$prefix"
"$prefix/bin/pip" install --quiet --disable-pip-version-check --no-input "$source[$extras]"
# Byte-compile now: the image's user cannot write to the virtualenv at run time.
"$prefix/bin/python" -m compileall -q "$prefix/lib" >/dev/null
"$prefix/bin/wslarkbot" serve --example-config > "$prefix/relay.example.toml"
echo "installed: $prefix/bin/wslarkbot serve --config /etc/wslarkbot/relay.toml"
