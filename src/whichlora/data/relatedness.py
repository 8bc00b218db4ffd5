"""How related each atlas language is to the training languages: script, family, URIEL distance.

Distances come from URIEL+ (`urielplus`, the maintained successor of lang2vec's URIEL database;
its data ships in the package, so this works offline): genetic (shared nodes of the language
family tree), syntactic (typological features) and geographic, each the angular distance over the
features both languages have, exactly as `URIELPlus.new_distance` computes it (here vectorised:
the library's own call takes seconds per handful of languages). Scripts come from `langcodes`
(CLDR likely subtags of the declaration's BCP 47 tag). Family and genus are the largest and the
second-largest node of the URIEL family tree that the language belongs to.

A language that URIEL+ does not know keeps its row, with `known` False and empty distances: it
is never dropped.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from whichlora.data.languages import iso639_3, language_name

DISTANCES = ("genetic", "syntactic", "geographic")
# urielplus's feature-matrix index and feature-name prefix per distance (its own mapping)
_MATRIX = {"genetic": (0, ""), "syntactic": (1, "S_"), "geographic": (2, "")}
# Scripts that differ only in variety for the question "does the tokenizer know these letters"
_SCRIPT_GROUPS = {"Hans": "Hani", "Hant": "Hani"}
COLUMNS = [
    "language", "name", "uriel", "script", "script_shared", "family", "genus", "nearest",
    "distance", *[f"distance_{d}" for d in DISTANCES], "known", "note",
]  # fmt: skip


@lru_cache(maxsize=1)
def _uriel() -> Any | None:
    """The URIEL+ database, or None when `urielplus` is not installed. Importing it calls
    logging.basicConfig(level=INFO) on the root logger: undone here, so the host's logging stays
    as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        from urielplus import urielplus
    except ImportError:
        return None
    finally:
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
    quiet = logging.getLogger()
    before = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        return urielplus.URIELPlus()
    finally:
        quiet.setLevel(before)


def _vectors(uriel: Any, distance: str, codes: Sequence[str]) -> np.ndarray:
    """(len(codes), features) aggregated as URIEL+ does (max of known sources, or the mean for
    geography); -1 = unknown. Codes URIEL+ lacks get an all-unknown row."""
    index, prefix = _MATRIX[distance]
    langs = {str(code): i for i, code in enumerate(uriel.langs[index])}
    feats = np.array([str(f).startswith(prefix) for f in uriel.feats[index]])
    out = np.full((len(codes), int(feats.sum())), -1.0)
    for row, code in enumerate(codes):
        if code not in langs:
            continue
        data = np.asarray(uriel.data[index][langs[code]], dtype=float)[feats]  # (F, sources)
        known = (data != -1.0) & np.isfinite(data)
        safe = np.where(known, data, np.nan)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: unknown features
            agg = np.nanmean(safe, axis=1) if distance == "geographic" else np.nanmax(safe, axis=1)
        out[row] = np.where(known.any(axis=1), agg, -1.0)
    return out


def angular_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) URIEL+ angular distances over the features both rows know (NaN when
    they share none): 2 arccos(cos) / pi, a zero vector standing in as 1e-10 everywhere."""
    out = np.full((len(a), len(b)), np.nan)
    for j, v in enumerate(b):
        shared = (a != -1.0) & (v != -1.0)
        has = shared.any(axis=1)
        u = np.where(shared, a, 0.0)
        w = np.where(shared, v[None, :], 0.0)
        nu, nw = np.linalg.norm(u, axis=1), np.linalg.norm(w, axis=1)
        # the library replaces a zero vector by 1e-10 in every (shared) position
        u = np.where((nu == 0)[:, None] & shared, 1e-10, u)
        w = np.where((nw == 0)[:, None] & shared, 1e-10, w)
        nu, nw = np.linalg.norm(u, axis=1), np.linalg.norm(w, axis=1)
        with np.errstate(all="ignore"):
            cos = np.clip((u * w).sum(axis=1) / (nu * nw), -1.0, 1.0)
        out[:, j] = np.where(has, np.round(2 * np.arccos(cos) / np.pi, 4), np.nan)
    return out


@lru_cache(maxsize=1)
def _tree() -> tuple[np.ndarray, np.ndarray, dict[str, int], list[str]]:
    """URIEL+'s family-tree memberships (languages x nodes), node sizes, index and names."""
    uriel = _uriel()
    data = np.asarray(uriel.data[0][:, :, 0], dtype=float) > 0
    langs = {str(code): i for i, code in enumerate(uriel.langs[0])}
    names = [str(f).removeprefix("F_") for f in uriel.feats[0]]
    return data, data.sum(axis=0), langs, names


def _family(codes: Sequence[str]) -> list[tuple[str, str]]:
    """(family, genus) per code: the language's two largest family-tree nodes ('' unknown)."""
    data, sizes, langs, names = _tree()
    out = []
    for code in codes:
        if code not in langs:
            out.append(("", ""))
            continue
        nodes = sorted(np.flatnonzero(data[langs[code]]), key=lambda k: (-sizes[k], names[k]))
        out.append((names[nodes[0]] if nodes else "", names[nodes[1]] if len(nodes) > 1 else ""))
    return out


def script_of(tag: str) -> str:
    """ISO 15924 script of a BCP 47 tag ('' when unknown), Simplified/Traditional Han as one."""
    try:
        import langcodes

        script = langcodes.Language.get(tag).maximize().script or ""
    except (ImportError, ValueError, LookupError):
        return ""
    return _SCRIPT_GROUPS.get(script, script)


def uriel_code(language: str, iso: str | None = None) -> str:
    """The code URIEL+ knows the language by: its declaration's ISO 639-3, else that of its
    canonical code (the macrolanguage), else '' when URIEL+ has neither."""
    known = _known_codes()
    for code in (iso, iso639_3(language), language):
        if code and code in known:
            return code
    return ""


@lru_cache(maxsize=1)
def _known_codes() -> frozenset[str]:
    uriel = _uriel()
    return frozenset(str(c) for c in uriel.langs[0]) if uriel is not None else frozenset()


def relatedness(
    languages: Mapping[str, Mapping[str, str]],
    trained: Mapping[str, Mapping[str, str]],
) -> pd.DataFrame:
    """One row per language of `languages` (code -> {name, iso639_3, bcp47}): its script and
    whether a training language (`trained`, same shape) shares it, family and genus, and the
    distance to the nearest training language (the mean of the genetic, syntactic and geographic
    distances it has, minimised over training languages; each kind also on its own)."""
    uriel = _uriel()
    codes = list(languages)
    train_codes = list(trained)
    u_codes = [uriel_code(c, languages[c].get("iso639_3")) for c in codes]
    t_codes = [uriel_code(c, trained[c].get("iso639_3")) for c in train_codes]
    scripts = [script_of(languages[c].get("bcp47") or c) for c in codes]
    train_scripts = {script_of(trained[c].get("bcp47") or c) for c in train_codes} - {""}
    per_kind: dict[str, np.ndarray] = {}
    if uriel is not None and train_codes:
        for kind in DISTANCES:
            per_kind[kind] = angular_distances(
                _vectors(uriel, kind, u_codes), _vectors(uriel, kind, t_codes)
            )
        families = _family(u_codes)
    else:
        families = [("", "")] * len(codes)
    rows = []
    for i, code in enumerate(codes):
        row: dict[str, Any] = {
            "language": code,
            "name": languages[code].get("name") or language_name(code),
            "uriel": u_codes[i],
            "script": scripts[i] or "unknown",
            "script_shared": bool(scripts[i]) and scripts[i] in train_scripts,
            "family": families[i][0] or ("unclassified" if u_codes[i] else "unknown"),
            "genus": families[i][1] or ("unclassified" if u_codes[i] else "unknown"),
            "nearest": "",
            "distance": np.nan,
            "known": False,
            "note": "",
        }
        if per_kind:
            stacked = np.stack([per_kind[k][i] for k in DISTANCES])  # (kinds, trained)
            for k, kind in enumerate(DISTANCES):
                values = stacked[k]
                row[f"distance_{kind}"] = (
                    float(np.nanmin(values)) if np.isfinite(values).any() else np.nan
                )
            counts = np.isfinite(stacked).sum(axis=0)
            with np.errstate(all="ignore"):
                mean = np.where(counts > 0, np.nansum(stacked, axis=0) / counts, np.nan)
            if np.isfinite(mean).any():
                best = int(np.nanargmin(mean))
                row.update(nearest=train_codes[best], distance=float(mean[best]), known=True)
        else:
            row.update({f"distance_{k}": np.nan for k in DISTANCES})
        if not u_codes[i]:
            row["note"] = "not in URIEL+" if uriel is not None else "urielplus not installed"
        elif not row["known"]:
            row["note"] = "no URIEL+ features shared with a training language"
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)
