"""Importing the official SOP 8- and 16-shot subset files (4 MiB or more; not stored where
the tests can read them): time and peak Python memory of ``import_subsets`` on synthetic files
of their shape (tests/protocols/test_fewshot_train.py: ``sop_shaped_subset``), against a
manifest of SOP's 59,551 training images.

    PYTHONPATH=$PWD python -m pytest benchmarks/test_fewshot_import.py --benchmark-only -s
"""

from __future__ import annotations

import tracemalloc

import pytest

from tests.protocols.test_fewshot_train import _manifest_only, sop_shaped_subset
from umlbench.protocols.fewshot_subsets import import_subsets


@pytest.mark.parametrize("shots", [8, 16])
def test_import_sop_subset(benchmark, tmp_path, shots):
    folder = tmp_path / "few"
    folder.mkdir()
    paths, labels = sop_shaped_subset(folder, shots)
    _manifest_only(tmp_path, "sop", paths, labels)
    size = (folder / f"dataset_SOP_shot_{shots}.pkl").stat().st_size

    # Peak memory in a separate call: tracemalloc slows the import several-fold.
    tracemalloc.start()
    try:
        import_subsets(folder, tmp_path, ["sop"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    benchmark.pedantic(import_subsets, args=(folder, tmp_path, ["sop"]), rounds=3,
                       iterations=1)
    benchmark.extra_info.update(file_bytes=size, peak_python_bytes=peak)
    print(f"\nSOP {shots}-shot: file {size / 2**20:.1f} MiB, peak Python memory "
          f"{peak / 2**20:.0f} MiB (tracemalloc)")
