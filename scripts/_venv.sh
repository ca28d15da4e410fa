# Sourced by scripts/run and scripts/test: make .venv (Python >= 3.11) and install the project.
# $1: the extras to install ("" or "test").
# The project is installed editable, so code changes need no reinstall; pip runs again only when
# pyproject.toml (the dependencies) or the extras asked for changed since the last install.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "calendar-gateway needs Python 3.11 or newer as \$PYTHON (found: $("$PYTHON" --version 2>&1))" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
extras="${1:-}"
target="."
[ -n "$extras" ] && target=".[$extras]"
# One stamp per extras set: "test" includes everything "" needs.
stamp=".venv/.installed-${extras:-base}"
want="$(cat pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ "$extras" = "" ] && [ -f .venv/.installed-test ] && [ "$(cat .venv/.installed-test)" = "$want" ]; then
  stamp=".venv/.installed-test"
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$target"
  echo "$want" > "$stamp"
fi
