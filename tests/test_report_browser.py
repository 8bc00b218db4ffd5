"""The HTML report in a real browser: headless Chromium loads it offline without console errors
and paints a page that is not blank.

Chromium prints every console message (errors, uncaught exceptions) to stderr as a CONSOLE line
with `--enable-logging=stderr`; the report has no scripts, so any such line is a failure. A
control page checks that this capture really works on the installed Chromium.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from synthetic import SyntheticSpec, make_synthetic_study

from whichlora.report.build import build_report

BROWSER = next((b for b in ("chromium", "chromium-browser") if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(
    BROWSER is None,
    reason="Chromium is not installed (Debian: apt-get install -y chromium chromium-driver)",
)
CONSOLE = re.compile(r":CONSOLE[:(].*")
WIDTH, HEIGHT = 1280, 2400


def render(page: Path, workdir: Path) -> tuple[Path, list[str]]:
    """Load `page` headless; return the screenshot and the console messages it printed."""
    shot = workdir / f"{page.stem}.png"
    profile = workdir / f"profile-{page.stem}"
    assert BROWSER is not None
    result = subprocess.run(
        [
            BROWSER,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            "--hide-scrollbars",
            f"--window-size={WIDTH},{HEIGHT}",
            f"--screenshot={shot}",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    log = result.stdout + result.stderr
    return shot, [m.group(0) for m in CONSOLE.finditer(log)]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("browser")
    ctx = make_synthetic_study(root, SyntheticSpec(failed=("pissa-s1",)))
    try:
        yield build_report(ctx.store, ctx.study, ctx.study_dir, ctx.runs)
    finally:
        ctx.close()


def test_console_capture_works(tmp_path: Path) -> None:
    page = tmp_path / "control.html"
    page.write_text(
        "<!DOCTYPE html><html><body><p>x</p>"
        "<script>console.error('control-error'); missingFunction();</script></body></html>",
        encoding="utf-8",
    )
    _, messages = render(page, tmp_path)
    assert any("control-error" in m for m in messages), messages
    assert any("missingFunction" in m for m in messages), messages


def test_report_loads_without_console_errors_and_is_not_blank(report: Path, tmp_path: Path) -> None:
    shot, messages = render(report, tmp_path)
    assert messages == []
    assert shot.is_file(), "Chromium wrote no screenshot"
    image = Image.open(shot).convert("RGB")
    assert image.size == (WIDTH, HEIGHT)
    small = image.resize((WIDTH // 4, HEIGHT // 4))
    colours = small.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 200, "screenshot has almost no distinct colours"
    white = sum(count for count, rgb in colours if min(rgb) >= 250)
    assert white / (small.width * small.height) < 0.9, "screenshot is nearly all white"
