import pytest

from umlbench.errors import UserError
from umlbench.registry import Registry


def test_register_get_and_names():
    reg = Registry("thing")
    reg.register("b", 2)

    @reg.register("a")
    def a():
        return 1

    assert reg.get("a") is a
    assert reg.names() == ["a", "b"]
    assert "a" in reg and "c" not in reg


def test_duplicate_name_raises():
    reg = Registry("thing")
    reg.register("x", 1)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("x", 2)


def test_unknown_name_is_user_error_listing_choices():
    reg = Registry("method")
    reg.register("puma", 1)
    with pytest.raises(UserError, match="unknown method 'pum'; known: puma"):
        reg.get("pum")


def test_entry_points_are_loaded_on_miss(monkeypatch):
    import umlbench.registry as mod

    class EP:
        name, value = "plugin-method", "pkg:obj"

        def load(self):
            return "loaded"

    monkeypatch.setattr(mod, "entry_points", lambda group: [EP()] if group == "grp" else [])
    reg = Registry("method", entry_point_group="grp")
    assert reg.get("plugin-method") == "loaded"


def test_builtin_methods_are_registered():
    from umlbench.methods import METHODS

    for name in ("off-the-shelf", "linear", "finetune", "vpt", "adaptformer", "lora", "puma"):
        assert name in METHODS


def test_lazy_names_are_listed_without_importing_and_loaded_on_get(monkeypatch):
    import types

    module = types.ModuleType("fake_plugin_module")
    reg = Registry("thing", lazy={"lazy-one": "fake_plugin_module:Thing"})

    def exec_module():  # what importing the module does: register through the decorator
        @reg.register("lazy-one")
        class Thing:
            """A thing that registers itself."""

        module.Thing = Thing
        return module

    imported = []
    monkeypatch.setattr("umlbench.registry.importlib.import_module",
                        lambda name: imported.append(name) or exec_module())
    assert reg.names() == ["lazy-one"] and "lazy-one" in reg and imported == []
    reg.check("lazy-one")
    with pytest.raises(UserError, match="unknown thing 'nope'; known: lazy-one"):
        reg.check("nope")
    assert imported == []
    assert reg.get("lazy-one") is module.Thing and imported == ["fake_plugin_module"]
    assert reg.summary("lazy-one") == "A thing that registers itself."


def test_a_stale_index_entry_is_a_loud_bug():
    reg = Registry("thing", lazy={"ghost": "umlbench.errors:UserError"})
    with pytest.raises(RuntimeError, match="did not register thing 'ghost'"):
        reg.get("ghost")


def _lazy_registries():
    from umlbench.methods import METHODS
    from umlbench.train.registry import LOSSES

    return {"methods": METHODS, "losses": LOSSES}


@pytest.mark.parametrize("kind", ["methods", "losses"])
def test_lazy_index_matches_the_decorators(kind):
    """The index that `umlbench list` reads names exactly what the built-in modules register,
    at the attribute it names, with the docstring it shows."""
    import importlib

    reg = _lazy_registries()[kind]
    index = reg.index
    summaries = {name: reg.summary(name) for name in index}  # read from source, not imported
    for name, target in index.items():
        module, attr = target.split(":")
        assert reg.get(name) is getattr(importlib.import_module(module), attr)
        assert reg.summary(name) == summaries[name]
    modules = {t.split(":")[0] for t in index.values()}
    registered = {n for n in reg.loaded()
                  if getattr(reg.get(n), "__module__", "").startswith(tuple(modules))}
    assert registered == set(index), "a built-in is registered but missing from the index"
