#!/usr/bin/env bash
# Run a command inside skprobe's Python environment, building it first if needed.
#
# The environment (torch/torchaudio pinned in .ci/constraints.txt, about 7 GB) is
# built once under $SKPROBE_ENV_ROOT (default ~/.cache/skprobe), in a folder keyed
# by the Python version and the pinned requirements, and reused by every clone.
# The project itself is (re)installed in editable mode when pyproject.toml, the
# pins or the clone's location change.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${SKPROBE_PYTHON:-python3}"
pyver=$("$py" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
key=$(sha256sum "$here/.ci/constraints.txt" | cut -c1-12)
root="${SKPROBE_ENV_ROOT:-$HOME/.cache/skprobe}"
env="$root/env-py$pyver-$key"
mkdir -p "$root"

exec 9>"$env.lock"
flock 9
if [ ! -f "$env/.torch-ready" ]; then
  echo "skprobe: building the Python environment in $env (one time, downloads about 3 GB)" >&2
  rm -rf "$env"
  "$py" -m venv "$env"
  "$env/bin/python" -m pip install -q --upgrade pip
  "$env/bin/python" -m pip install -q -c "$here/.ci/constraints.txt" torch torchaudio
  touch "$env/.torch-ready"
fi
stamp=$(cat "$here/pyproject.toml" "$here/.ci/constraints.txt" <(echo "$here") | sha256sum | cut -c1-16)
if [ "$(cat "$env/.project-stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "skprobe: installing the project into $env" >&2
  "$env/bin/python" -m pip install -q -c "$here/.ci/constraints.txt" -e "$here[test,docs]"
  echo "$stamp" > "$env/.project-stamp"
fi
flock -u 9

export PATH="$env/bin:$PATH" VIRTUAL_ENV="$env"
exec "$@"
