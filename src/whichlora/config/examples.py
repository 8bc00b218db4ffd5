"""The example studies shipped inside the package (src/whichlora/examples), found by name.

`whichlora run quickstart` runs the bundled quickstart from any folder, and `whichlora init NAME`
writes a copy to edit. The repository's `examples/` is a link to the same folder: one copy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from whichlora.errors import WhichloraError

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"


def bundled_studies() -> dict[str, Path]:
    """Name (the file's stem) -> the bundled study file."""
    return {path.stem: path for path in sorted(EXAMPLES_DIR.glob("*.yaml"))}


def study_path(target: str | Path) -> Path:
    """The study file or folder as given; where no such path exists and `target` names a bundled
    study, that study's file."""
    path = Path(target)
    if not path.exists() and str(target) in bundled_studies():
        return bundled_studies()[str(target)]
    return path


def write_example(name: str, folder: str | Path) -> Path:
    """Copy the bundled study `name` to folder/NAME.yaml, never over an existing file."""
    studies = bundled_studies()
    if name not in studies:
        raise WhichloraError(
            f"There is no bundled study '{name}'. Fix: use one of {', '.join(studies)}."
        )
    folder = Path(folder)
    target = folder / studies[name].name
    if target.exists():
        raise WhichloraError(
            f"{target} already exists; whichlora init never overwrites a file. Fix: edit or run "
            "that file, remove it, or give another folder (`whichlora init NAME DIR`)."
        )
    if folder.exists() and not folder.is_dir():
        raise WhichloraError(f"{folder} is not a folder. Fix: give a folder to write into.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(studies[name], target)
    except OSError as exc:
        raise WhichloraError(
            f"Cannot write {target} ({exc.strerror}). Fix: choose a folder you can write to."
        ) from None
    return target
