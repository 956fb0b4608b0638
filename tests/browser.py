"""What the browser test (tests/test_browser.py) needs: Node.js, Chromium and the
example's npm packages, and the one line that says so when any is missing.

`python -m tests.browser` prints that line, or nothing when all is there (exit 0
either way); `python -m tests.browser --packages-fresh` exits 0 when
examples/nextjs/node_modules matches its lockfile. scripts/test calls both.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "nextjs"
CHROMIUM = Path(os.environ.get("ROTOR_CHROMIUM", "/usr/bin/chromium"))
NPM_CI = "(cd examples/nextjs && npm ci)"


def packages_fresh() -> bool:
    """`npm ci` has run since the lockfile last changed (npm writes its own copy)."""
    installed = EXAMPLE / "node_modules" / ".package-lock.json"
    lock = EXAMPLE / "package-lock.json"
    return installed.is_file() and installed.stat().st_mtime >= lock.stat().st_mtime


def missing() -> str | None:
    """None when the browser test can run; else the line saying it did not, and what
    installs what is missing."""
    debian: list[str] = []
    if not (shutil.which("node") and shutil.which("npm")):
        debian += ["nodejs", "npm"]
    if not os.access(CHROMIUM, os.X_OK):
        debian.append("chromium")
    packages = not packages_fresh()
    if not debian and not packages:
        return None
    lacking = debian + (["the example's npm packages"] if packages else [])
    steps = [f"apt-get update && apt-get install -y {' '.join(debian)}"] if debian else []
    if packages:
        steps.append(NPM_CI)
    return (
        f"browser test (tests/test_browser.py) did not run: missing {', '.join(lacking)}; "
        f"install with: {' && '.join(steps)}"
    )


def main(argv: list[str]) -> int:
    if argv == ["--packages-fresh"]:
        return 0 if packages_fresh() else 1
    line = missing()
    if line:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
