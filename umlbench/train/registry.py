"""The loss registry. It lives apart from :mod:`umlbench.train.losses` so that listing losses
(``umlbench list losses``) or naming an unknown one never imports torch; the losses module
registers each factory with ``@LOSSES.register`` when a loss is built."""

from __future__ import annotations

from umlbench.registry import Registry

__all__ = ["LOSSES"]

_LOSSES_MODULE = "umlbench.train.losses"

# Built-in loss name -> its factory ``(num_classes, embedding_size, **args) -> nn.Module``
# (tests/test_registry.py checks this index against the decorators).
LOSSES: Registry = Registry("loss", entry_point_group="umlbench.losses", lazy={
    name: f"{_LOSSES_MODULE}:{factory}" for name, factory in {
        "curricularface": "_curricularface",
        "triplet": "_triplet",
        "multi_similarity": "_ms",
        "margin": "_margin",
        "proxy_anchor": "_proxy_anchor",
        "proxy_nca_pp": "_proxy_nca",
        "cosface": "_cosface",
        "arcface": "_arcface",
        "soft_triple": "_soft_triple",
        "hyp_supcon": "_hyp_supcon",
    }.items()
})
