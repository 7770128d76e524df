"""Property-based test of `build` (hypothesis): random and mutated CIF text, labels and IDs.

Whatever the rows hold, the build never crashes and never loses a row: each input row becomes a store row or
a line of rejects.csv with a known reason (accepted + rejected == input rows), and the stored IDs are exactly
those of the rows not rejected, in input order.  A build that accepts nothing is the one clear error that says
so (its counts add up too).  Run with ``-s`` to see the totals.
"""
from __future__ import annotations

import csv
import re
import shutil
import tempfile
from collections import Counter
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_store import cif, good_structures

from ftcp.errors import UserError
from ftcp.store import REJECT_REASONS, build_store

TOTALS: Counter = Counter()
TEXT = st.characters(blacklist_categories=("Cs",))          # any character UTF-8 can carry
NUMBER_RE = re.compile(r"-?\d+\.\d+|\b\d+\b")
ODD_NUMBERS = ["0", "-1", "1e9", "1e-9", "nan", "inf", "?", ".", "abc", "0.0001", "-0.5", "1e308"]


@lru_cache(maxsize=1)
def good_cifs() -> tuple[str, ...]:
    return tuple(cif(s) for s in good_structures()[:5])


@st.composite
def mutated_cif(draw) -> str:
    text = draw(st.sampled_from(good_cifs()))
    for _ in range(draw(st.integers(1, 3))):
        lines = text.split("\n")
        op = draw(st.sampled_from(["truncate", "delete_line", "duplicate_line", "swap_lines", "number",
                                   "insert", "flip"]))
        if op == "truncate":
            text = text[:draw(st.integers(0, len(text)))]
        elif op in ("delete_line", "duplicate_line", "swap_lines") and lines:
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            if op == "delete_line":
                del lines[i]
            elif op == "duplicate_line":
                lines.insert(i, lines[i])
            else:
                lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
        elif op == "number":
            spots = list(NUMBER_RE.finditer(text))
            if spots:
                m = spots[draw(st.integers(0, len(spots) - 1))]
                new = draw(st.sampled_from(ODD_NUMBERS) | st.floats(-1e3, 1e3).map(repr))
                text = text[:m.start()] + new + text[m.end():]
        elif op == "insert":
            at = draw(st.integers(0, len(text)))
            text = text[:at] + draw(st.text(TEXT, max_size=30)) + text[at:]
        elif text:
            at = draw(st.integers(0, len(text) - 1))
            text = text[:at] + draw(st.characters(blacklist_categories=("Cs",))) + text[at + 1:]
    return text


def mostly(common, *rare):
    """``common`` three times in four, else one of ``rare`` (``one_of`` alone would let the rare ones dominate)."""
    return st.integers(0, 3).flatmap(lambda k: common if k < 3 else st.one_of(*rare))


GOOD_CIF = st.deferred(lambda: st.sampled_from(good_cifs()))       # deferred: the CIFs are made on first use
CIF_TEXT = mostly(mutated_cif(), GOOD_CIF, st.text(TEXT, max_size=120), st.just(""))
MATERIAL_ID = mostly(st.integers(0, 60).map(lambda k: f"mp-{k}"),   # mostly unique, sometimes repeated
                     st.text(TEXT, max_size=12), st.just(""), st.just("  "), st.just("a\nb"), st.just("x\ry"))
LABEL = mostly(st.floats(-10, 10).map(repr),
               st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers().map(str),
               st.text(TEXT, max_size=8), st.just(""))
ROW = st.fixed_dictionaries({"material_id": MATERIAL_ID, "cif": CIF_TEXT,
                             "formation_energy_per_atom": LABEL, "band_gap": LABEL})


@pytest.fixture(scope="module", autouse=True)
def totals():
    yield
    print(f"\nbuild properties: {TOTALS['examples']} builds, {TOTALS['rows']} rows: {TOTALS['accepted']} accepted, "
          f"{TOTALS['rejected']} rejected; {TOTALS['nothing_accepted']} builds accepted nothing (one error); "
          "by reason: " + ", ".join(f"{k[8:]} {v}" for k, v in sorted(TOTALS.items()) if k.startswith("reason:")))


# derandomized: the same 60 examples on every run, so CI is stable (they found the "\r"-in-an-ID bug of
# rejects.csv); to explore, drop derandomize and pass --hypothesis-seed=N
@settings(max_examples=60, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(rows=st.lists(ROW, min_size=1, max_size=8), anchor=st.one_of(st.none(), st.integers(0, 8)))
def test_every_row_is_accepted_or_rejected_with_a_reason(rows, anchor):
    if anchor is not None:      # usually one good row, so that most builds write a store
        rows = list(rows)
        rows.insert(min(anchor, len(rows)), {"material_id": "anchor", "cif": good_cifs()[0],
                                             "formation_energy_per_atom": "-1.5", "band_gap": "0.5"})
    work = Path(tempfile.mkdtemp(prefix="ftcp_prop_"))
    try:
        source = work / "rows.csv"
        pd.DataFrame(rows).to_csv(source, index=False, quoting=csv.QUOTE_ALL)     # "\r" in a field stays in it
        # what a reader of the file sees (the same parse the store does), to know each row's ID
        seen = pd.read_csv(source, dtype=str, keep_default_na=False)
        n = len(seen)
        assert n == len(rows)
        TOTALS.update(examples=1, rows=n)
        try:
            manifest = build_store(source, work / "store", workers=1, chunk_size=3, progress=False)
        except UserError as exc:
            # nothing accepted: one clear error whose counts cover every row, and no store left behind
            message = str(exc)
            assert f"none of the {n} input rows of {source} was accepted" in message, message
            counts = re.search(r"was accepted \(([^)]*)\)", message).group(1)
            by_reason = {code: int(k) for code, k in (part.rsplit(" ", 1) for part in counts.split(", "))}
            assert sum(by_reason.values()) == n and set(by_reason) <= set(REJECT_REASONS)
            assert not (work / "store" / "manifest.json").exists() and not (work / "store" / ".build").exists()
            TOTALS.update(nothing_accepted=1, rejected=n, **{f"reason: {c}": k for c, k in by_reason.items()})
            event("nothing accepted")
            return
        c = manifest["counts"]
        assert c["input"] == n == c["accepted"] + c["rejected"]
        rejects = pd.read_csv(work / "store" / "rejects.csv", dtype=str, keep_default_na=False)
        rejected_rows = [int(r) for r in rejects.input_row]
        assert len(set(rejected_rows)) == len(rejected_rows) == c["rejected"]
        assert all(0 <= r < n for r in rejected_rows)
        assert set(rejects.reason) <= set(REJECT_REASONS) and (rejects.detail != "").all()
        kept = [i for i in range(n) if i not in set(rejected_rows)]
        ids = np.load(work / "store" / "material_ids.npy").tolist()
        assert ids == [seen.material_id[i].strip() for i in kept]
        assert len(pd.read_csv(work / "store" / "labels.csv")) == c["accepted"]
        TOTALS.update(accepted=c["accepted"], rejected=c["rejected"],
                      **{f"reason: {k}": v for k, v in Counter(rejects.reason).items()})
        for reason in set(rejects.reason):
            event(f"rejected: {reason}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
