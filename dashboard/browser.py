"""Headless Chromium as a subprocess: the DOM after the page's scripts ran, and screenshots.

Debian's ``chromium`` package (``/usr/bin/chromium``); ``ensure_chromium`` installs it (and
``chromium-driver``) with apt-get when missing, and raises ``ChromiumUnavailable`` with what to do when
that fails. Every run gets a fresh profile directory and the flags that keep Chromium off the network
(no background updates, component downloads, sync or QUIC) and working as root in a container.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Final

CHROMIUM: Final = "/usr/bin/chromium"
CHROMEDRIVER: Final = "/usr/bin/chromedriver"
APT_PACKAGES: Final = ("chromium", "chromium-driver")
FLAGS: Final = (
    "--headless",
    "--no-sandbox",  # running as root
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--lang=en-GB",
)


class ChromiumUnavailable(RuntimeError):
    """Chromium is not installed and could not be installed."""


def chromium_path() -> str | None:
    for candidate in (CHROMIUM, shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def ensure_chromium(*, install: bool = True, timeout: float = 900.0) -> str:
    """The Chromium binary, installed with apt-get first when missing (needs root)."""
    found = chromium_path()
    if found or not install:
        if found:
            return found
        raise ChromiumUnavailable(f"{CHROMIUM} not found: apt-get install -y {' '.join(APT_PACKAGES)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *APT_PACKAGES])
    log: list[str] = []
    for cmd in steps:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ChromiumUnavailable(f"`{' '.join(cmd)}` failed: {exc}") from exc
        log.append(f"$ {' '.join(cmd)} -> exit {proc.returncode}\n{proc.stderr[-2000:]}")
        if proc.returncode != 0:
            raise ChromiumUnavailable(
                f"could not install {' '.join(APT_PACKAGES)} (run as root with Debian's package mirrors "
                "reachable):\n" + "\n".join(log)
            )
    found = chromium_path()
    if not found:
        raise ChromiumUnavailable(f"apt-get reported success but {CHROMIUM} is missing:\n" + "\n".join(log))
    return found


def _run(args: list[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
    binary = ensure_chromium(install=False)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [binary, *FLAGS, f"--user-data-dir={profile}", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"chromium exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


def dump_dom(url: str, *, virtual_time_ms: int = 3000, timeout: float = 90.0) -> str:
    """The page's DOM after its scripts ran for ``virtual_time_ms`` of virtual time."""
    return _run([f"--virtual-time-budget={virtual_time_ms}", "--dump-dom", url], timeout=timeout).stdout


def screenshot(
    url: str,
    out: Path,
    *,
    width: int = 1400,
    height: int = 1800,
    virtual_time_ms: int = 1500,
    timeout: float = 90.0,
) -> Path:
    """A PNG of the page at ``width`` x ``height``; empty background at the bottom is trimmed (Pillow)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    _run(
        [
            f"--window-size={width},{height}",
            f"--virtual-time-budget={virtual_time_ms}",
            f"--screenshot={out}",
            url,
        ],
        timeout=timeout,
    )
    if not out.is_file():
        raise RuntimeError(f"chromium wrote no screenshot to {out}")
    trim_bottom(out)
    return out


def trim_bottom(path: Path, *, margin: int = 16) -> None:
    """Cut the rows below the page's content (the background colour of the bottom-left pixel)."""
    try:
        from PIL import Image  # noqa: PLC0415 - optional: comes with matplotlib
    except ImportError:
        return
    with Image.open(path) as img:
        rgb = img.convert("RGB")
        w, h = rgb.size
        bg = rgb.getpixel((0, h - 1))
        last = h - 1
        while last > 0 and all(rgb.getpixel((x, last)) == bg for x in range(0, w, 4)):
            last -= 1
        if last + margin < h - 1:
            rgb.crop((0, 0, w, last + margin)).save(path, optimize=True)
