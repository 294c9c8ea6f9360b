#!/bin/sh
# The one build recipe of every image: run by the first stage of each services/*/Dockerfile,
# which copies it in with the service's own lock.
#
#   COPY services/build/venv.sh /tmp/venv.sh
#   COPY services/<service>/requirements.lock /tmp/requirements.lock
#   RUN sh /tmp/venv.sh [PATH...]
#
# Makes the venv /opt/venv, which the final stage copies whole: without pip and setuptools
# (installed by the base's pip from outside), from the lock with hashes; then drops the test
# folders of installed packages, C sources and headers, and typing stubs. Each PATH is deleted
# too, relative to site-packages (globs allowed): what an image does not run.
#
# A script, not a shared build stage or builder image: COPY + RUN work the same on BuildKit
# and on the classic builder (`DOCKER_BUILDKIT=0`, which builds every earlier stage of a
# multi-target Dockerfile), need neither Compose's `additional_contexts` nor a prebuilt image,
# and `docker build -f services/<service>/Dockerfile .` still builds one image on its own.
set -eu
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
python -m venv --without-pip /opt/venv
python -m pip --python /opt/venv/bin/python install --no-deps --require-hashes \
        -r /tmp/requirements.lock
find /opt/venv/lib -depth -type d -name tests -exec rm -rf {} +
find /opt/venv/lib \( -name "*.pyx" -o -name "*.pxd" -o -name "*.pxi" -o -name "*.h" \
    -o -name "*.hpp" -o -name "*.c" -o -name "*.cpp" -o -name "*.pyi" \) -delete
cd /opt/venv/lib/python3.11/site-packages
for path in "$@"; do
    # Unquoted on purpose: a glob such as pyarrow/*flight* expands here.
    # shellcheck disable=SC2086
    rm -rf $path
done
