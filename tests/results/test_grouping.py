"""Which runs a leaderboard row averages: like with like (config and data identity), each seed
once with the newest record counted, rows that share a name told apart, footnotes."""

from __future__ import annotations

import pytest

from tests.results.test_record import CODE, data_block, make_record
from umlbench.errors import UserError
from umlbench.results.formats import render
from umlbench.results.grouping import parse_group_by
from umlbench.results.leaderboard import build_board
from umlbench.results.store import records_frame


def _board(records, **kwargs):
    return build_board(records_frame(records), "recall@1", **kwargs)


def test_same_method_and_seed_with_other_data_is_another_row():
    resized = make_record(seed=0, run_id="a", display="PUMA",
                          data=data_block(kind="resized", image_size=256))
    packed = make_record(seed=0, run_id="b", display="PUMA", r1=(0.7, 0.8),
                      data=data_block(kind="packed", image_size=None))
    board = _board([resized, packed])
    assert sorted(board.rows) == ["PUMA [packed]", "PUMA [resized 256]"]
    assert board.n.to_dict() == {"PUMA [resized 256]": 1, "PUMA [packed]": 1}
    assert board.mean.at["PUMA [packed]", "mini-cub"] == pytest.approx(0.7)
    # Data that differs where the label cannot show it (same image source, other manifest).
    other = make_record(seed=0, run_id="c", display="PUMA",
                        data=data_block(kind="resized", image_size=256, manifest="other"))
    rows = _board([resized, other]).rows
    assert len(rows) == 2 and all(r.startswith("PUMA [data ") for r in rows)


def test_records_without_data_identity_are_a_row_of_their_own():
    new = [make_record(seed=s, run_id=f"new{s}", display="PUMA") for s in (0, 1)]
    old = make_record(seed=2, run_id="old", display="PUMA", data=None)
    board = _board(new + [old])
    assert board.n.to_dict() == {"PUMA [generated 32]": 2, "PUMA [data unknown]": 1}
    assert any("without data identity" in n and "PUMA [data unknown]" in n for n in board.footnotes)


def test_other_config_is_another_row_named_by_what_differs():
    a = [make_record(seed=s, run_id=f"a{s}", display="PUMA", config={"train": {"lr": 1e-4}})
         for s in (0, 1)]
    b = make_record(seed=0, run_id="b", display="PUMA", config={"train": {"lr": 1e-3}})
    board = _board(a + [b])
    assert board.n.to_dict() == {"PUMA [train.lr=0.0001]": 2, "PUMA [train.lr=0.001]": 1}


def test_each_seed_counts_once_and_the_newest_record_wins():
    old = make_record(seed=0, run_id="puma-old", display="PUMA", r1=(0.1, 0.1),
                      created="2026-01-01T00:00:00+0000")
    new = make_record(seed=0, run_id="puma-new", display="PUMA", r1=(0.9, 0.9),
                      created="2026-01-02T00:00:00+0000")
    other_seed = make_record(seed=1, run_id="puma-s1", display="PUMA", r1=(0.7, 0.7),
                             created="2025-12-31T00:00:00+0000")
    board = _board([new, old, other_seed])
    assert board.n["PUMA"] == 2
    assert board.mean.at["PUMA", "mini-cub"] == pytest.approx(0.8)  # (0.9 + 0.7) / 2
    assert board.footnotes[0].startswith("1 duplicate record set aside") and "puma-old" in \
        board.footnotes[0]
    assert "Note: 1 duplicate record set aside" in render(board, "markdown")


def test_several_code_versions_get_a_footnote():
    recs = [make_record(seed=s, run_id=f"r{s}", display="PUMA") for s in (0, 1)]
    recs.append(make_record(seed=2, run_id="r2", display="PUMA",
                            code={**CODE, "git_commit": "2" * 40, "dirty": True,
                                  "diff_sha256": "d" * 64}))
    board = _board(recs)
    assert board.n["PUMA"] == 3
    note = next(n for n in board.footnotes if "code versions" in n)
    assert "0.1.0 1111111111" in note and "0.1.0 2222222222-dirty dddddddd" in note
    assert "rows mixing versions: PUMA" in note
    split = _board(recs, group_by=parse_group_by("config,data,code"))
    assert split.n.to_dict() == {"PUMA [code 0.1.0 1111111111]": 2,
                                 "PUMA [code 0.1.0 2222222222-dirty dddddddd]": 1}
    single = _board(recs[:2])
    assert single.footnotes == []


def test_group_by_name_pools_deliberately():
    resized = make_record(seed=0, run_id="a", display="PUMA",
                          data=data_block(kind="resized", image_size=256))
    packed = make_record(seed=1, run_id="b", display="PUMA",
                      data=data_block(kind="packed", image_size=None))
    board = _board([resized, packed], group_by=parse_group_by("name"))
    assert board.rows == ["PUMA"] and board.n["PUMA"] == 2
    assert any(n.startswith("Pooled with --group-by name") for n in board.footnotes)
    assert _board([resized, packed], group_by=parse_group_by("config")).n.to_dict() == {"PUMA": 2}


def test_group_by_rejects_unknown_fields():
    assert parse_group_by("config, data") == ("config", "data")
    assert parse_group_by("name") == ()
    with pytest.raises(UserError, match="--group-by 'seed' is not one of: name, config"):
        parse_group_by("config,seed")


def test_level_board_keeps_levels_as_columns_and_splits_other_data():
    def rec(level, split, seed=0):
        return make_record(seed=seed, run_id=f"l{level}-{split}-{seed}", display="PUMA",
                           universal=0.5 + level / 10,
                           protocol={"name": "oodml", "dataset": "mini-cub", "level": level,
                                     "fid": 1.0 * level},
                           data=data_block(datasets=("mini-cub",), split=split))

    recs = [rec(lv, "splits-v1", s) for lv in (1, 2) for s in (0, 1)] + [rec(1, "splits-v2")]
    board = _board(recs, protocol="oodml")
    assert board.columns == ["level:1", "level:2", "auc"]
    assert len(board.rows) == 2 and all(r.startswith("PUMA [data ") for r in board.rows)
    assert sorted(board.n.tolist()) == [1, 2]


def test_terminal_table_shows_bracketed_labels_verbatim():
    from rich.console import Console

    from umlbench.results.terminal import to_rich

    resized = make_record(seed=0, run_id="a", display="PUMA",
                          data=data_block(kind="resized", image_size=256))
    packed = make_record(seed=0, run_id="b", display="PUMA",
                      data=data_block(kind="packed", image_size=None))
    console = Console(record=True, width=200)
    console.print(to_rich(_board([resized, packed])))
    text = console.export_text()
    assert "PUMA [resized 256]" in text and "PUMA [packed]" in text


def test_plot_counts_each_seed_once_and_says_so(tmp_path):
    from click.testing import CliRunner

    from umlbench.cli import cli
    from umlbench.results.record import write_record

    for run_id, created in (("old", "2026-01-01T00:00:00"), ("new", "2026-01-02T00:00:00")):
        write_record(make_record(seed=0, run_id=run_id, display="PUMA", created=created),
                     tmp_path / "mini")
    res = CliRunner().invoke(cli, ["plot", "--kind", "datasets", "--results-dir", str(tmp_path),
                                   "--out", str(tmp_path / "fig.png")])
    assert res.exit_code == 0, res.output
    assert "note: 1 duplicate record(s) set aside" in res.stderr and "old" in res.stderr
    assert "pools runs of different data" not in res.stderr
    write_record(make_record(seed=1, run_id="raw", display="PUMA",
                             data=data_block(kind="packed", image_size=None)), tmp_path / "mini")
    res = CliRunner().invoke(cli, ["plot", "--kind", "datasets", "--results-dir", str(tmp_path),
                                   "--out", str(tmp_path / "fig.png")])
    assert "note: PUMA pools runs of different data identities" in res.stderr


def test_figures_warn_only_when_one_point_pools_several_data_identities():
    from umlbench.results.grouping import mixed_data

    resized = make_record(seed=0, run_id="a", display="PUMA",
                          data=data_block(kind="resized", image_size=256))
    packed = make_record(seed=1, run_id="b", display="PUMA",
                         data=data_block(kind="packed", image_size=None))
    assert mixed_data(records_frame([resized, packed])) == ["PUMA"]
    # ooDML levels are different splits, so different data by design: no warning.
    levels = [make_record(seed=0, run_id=f"l{lv}", display="PUMA",
                          data=data_block(kind="resized", image_size=256, manifest=f"m{lv}"),
                          protocol={"name": "oodml", "dataset": "mini-cub", "level": lv})
              for lv in (1, 2)]
    assert mixed_data(records_frame(levels + [resized])) == []
