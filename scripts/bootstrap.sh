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
"$VENV/bin/python" -m pip install --quiet --editable "$spec"
