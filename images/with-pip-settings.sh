#!/bin/sh
# Run a command inside `docker build` with the host's pip settings, which arrive as BuildKit secrets
# (never written into a layer): pipenv = PIP_INDEX_URL / PIP_EXTRA_INDEX_URL / TENSORRT_INDEX_URL lines,
# pipcert = the CA bundle of a TLS-intercepting proxy; /wheels = a wheelhouse bind-mounted from the context.
set -eu
if [ -s /run/secrets/pipenv ]; then set -a; . /run/secrets/pipenv; set +a; fi
if [ -s /run/secrets/pipcert ]; then export PIP_CERT=/run/secrets/pipcert; fi
if ls /wheels/*.whl >/dev/null 2>&1; then export PIP_FIND_LINKS=/wheels; fi
exec "$@"
