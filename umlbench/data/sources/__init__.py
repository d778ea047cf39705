"""The eight real datasets of the UML benchmark, one module each; importing registers them."""

from umlbench.data.sources import aircraft, cars, cub, dogs, flowers, inshop, nabirds, sop

__all__ = ["aircraft", "cars", "cub", "dogs", "flowers", "inshop", "nabirds", "sop"]
