# Sourced by the other scripts: a virtual environment with catalogd installed.
# CATALOGD_VENV chooses where (default .venv); EXTRAS which extras to install.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=${CATALOGD_VENV:-.venv}
EXTRAS=${EXTRAS:-}
pick_python() {
    for candidate in "${PYTHON:-}" python3.12 python3.11 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "catalogd needs Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
    return 1
}
if [ ! -x "$VENV/bin/python" ]; then
    "$(pick_python)" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
spec="."
[ -n "$EXTRAS" ] && spec=".[$EXTRAS]"
# The install is editable, so only a change of pyproject.toml or of the extras needs a
# new one; the stamp remembers what was installed.
stamp="$VENV/.catalogd-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $spec"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "installing catalogd ($spec) into $VENV ..." >&2
    "$VENV/bin/python" -m pip install --quiet --editable "$spec"
    echo "$want" >"$stamp"
fi
