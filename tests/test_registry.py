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
