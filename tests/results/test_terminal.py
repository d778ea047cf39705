"""The terminal leaderboard at 80 and 120 columns: every number whole, nothing cut or wrapped.

The board mirrors the mini leaderboard's shape: eight datasets, universal, HM and thirteen
methods with long names, three seeds each (so every cell has a std).
"""

from __future__ import annotations

import io
import re
from collections import Counter

import pytest
from rich.console import Console

from tests.results.test_record import make_record
from umlbench.data.registry import suite_datasets
from umlbench.results.leaderboard import build_board, build_paper_board
from umlbench.results.store import records_frame
from umlbench.results.terminal import to_rich

NAMES = ["PUMA", "PUMA (no stochastic drop)", "PUMA (adapters only)", "PUMA (prompt pool only)",
         "Fine-tuning, unified (ArcFace)", "Fine-tuning, specific (Proxy-Anchor)",
         "Fine-tuning, unified (Proxy-Anchor)", "Fine-tuning, specific (ArcFace)",
         "AdaptFormer", "LoRA", "VPT-deep", "Linear probe", "Off-the-shelf"]
NUMBER = re.compile(r"(?<![\d.])\d{1,3}\.\d\d(?![\d.])")


def _records(ks=(1, 2, 4, 8)):
    out = []
    datasets = suite_datasets("mini")
    for i, name in enumerate(NAMES):
        for seed in range(3):
            base = 0.45 + 0.03 * i + 0.011 * seed
            rec = make_record(method=f"m{i}", display=name, seed=seed, universal=base,
                              trainable=10 ** (3 + i % 5), run_id=f"m{i}-s{seed}")
            per = {}
            for j, d in enumerate(datasets):
                v = min(base + 0.02 * j, 0.999)
                per[d] = {f"recall@{k}": min(v + 0.01 * q, 1.0) for q, k in enumerate(ks)}
            rec.metrics["per_dataset"] = per
            hm = len(per) / sum(1 / p["recall@1"] for p in per.values())
            rec.metrics["summary"] = {"harmonic_mean": {"recall@1": hm}}
            out.append(rec)
    return records_frame(out)


def _render(board, width: int, std: bool) -> str:
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(to_rich(board, width=width, std=std))
    return console.export_text()


def _expected_numbers(board, std: bool) -> Counter:
    want = Counter()
    for row in board.rows:
        for col in board.columns:
            mean, sd = board.mean.at[row, col], board.std.at[row, col]
            if mean == mean:
                want[f"{100 * mean:.2f}"] += 1
                if std and sd == sd:
                    want[f"{100 * sd:.2f}"] += 1
    return want


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("std", [False, True])
def test_no_number_is_cut_at_80_and_120_columns(width, std):
    board = build_board(_records(), "recall@1")
    text = _render(board, width, std)
    lines = text.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= width
    assert "…" not in text and "..." not in text
    found = Counter(NUMBER.findall(text))
    missing = _expected_numbers(board, std) - found
    assert not missing, f"numbers cut or lost at {width} columns: {dict(missing)}"
    for name in NAMES:  # names may wrap between words, never lose one
        for word in name.split():
            assert word in text
    assert "Key: CUB mini-CUB" in " ".join(text.split())


def test_fits_one_table_at_120_and_splits_at_80():
    board = build_board(_records(), "recall@1")
    assert "[1/" not in _render(board, 120, std=False)
    narrow = _render(board, 80, std=False)
    parts = re.findall(r"\[(\d)/(\d)\]", narrow)
    assert len(parts) >= 2 and all(total == parts[0][1] for _, total in parts)
    # Every part repeats the method column, so each row is identifiable in each part.
    assert narrow.count("Off-the-shelf") == len(parts)


def test_paper_view_keeps_each_datasets_k_list_together():
    board = build_paper_board(_records(ks=(1, 2, 4, 8, 10, 20, 30, 100, 1000)))
    text = _render(board, 120, std=False)
    assert "…" not in text
    found = Counter(NUMBER.findall(text))
    assert not _expected_numbers(board, std=False) - found
    # A dataset's header and its whole R@K list stay in one part; Univ and HM one column each.
    seen = Counter()
    for part in re.split(r"umlbench leaderboard", text)[1:]:
        counts = Counter(part.splitlines()[1].split())
        for short, n in counts.items():
            assert n == (1 if short in ("Univ", "HM") else 4), (short, n)
        seen.update(counts)
    assert set(seen) == {"CUB", "Cars", "SOP", "InShop", "NABird", "Dogs", "Flower", "Air",
                         "Univ", "HM"}
    assert "R@1000" in text and "R@30" in text and "R@8" in text
