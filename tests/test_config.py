import pytest

from umlbench.config import RunConfig, from_dict, parse_overrides
from umlbench.errors import UserError
from umlbench.runner import build_config


def test_overrides_parse_values_as_yaml():
    d = parse_overrides(["train.epochs=3", "train.crop=[0.1, 1]", "method.adapter_dim=64",
                         "backbone.weights=/x/y.safetensors"])
    assert d["train"]["epochs"] == 3
    assert d["train"]["crop"] == [0.1, 1]
    assert d["method_args"]["adapter_dim"] == 64
    assert d["backbone"]["weights"] == "/x/y.safetensors"


def test_unknown_key_names_the_source_and_key():
    with pytest.raises(UserError, match=r"--set: unknown config key 'train.epoch'"):
        build_config("puma", "mini", overrides=["train.epoch=3"])


def test_unknown_method_arg_is_an_error():
    with pytest.raises(UserError, match="unknown config key 'method.adaptor_dim'"):
        build_config("puma", "mini", overrides=["method.adaptor_dim=3"])


def test_type_errors_are_user_errors():
    with pytest.raises(UserError, match="train.epochs must be an integer >= 1, got .many."):
        from_dict(RunConfig, {"method": "x", "train": {"epochs": "many"}})


def test_layering_suite_method_file_overrides(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("train:\n  epochs: 7\n  lr: 0.5\nmethod:\n  args: {adapter_dim: 16}\n")
    cfg = build_config("puma", "mini", cfg_file, ["train.lr=0.25"], seed=3)
    assert cfg.train.epochs == 7  # file beats the method's mini.yaml
    assert cfg.train.lr == 0.25  # --set beats the file
    assert cfg.method_args["adapter_dim"] == 16
    assert cfg.seed == 3
    assert cfg.backbone.name == "vit_mini_patch4_32"  # from the suite defaults


def test_bad_yaml_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(UserError, match="bad.yaml: invalid YAML"):
        build_config("puma", "mini", bad)


def test_per_loss_defaults_apply_to_finetune():
    cfg = build_config("finetune", "mini", overrides=["loss.name=triplet"])
    assert (cfg.train.sampler, cfg.train.ipc) == ("unique", 4)
    cfg = build_config("finetune", "mini", overrides=["loss.name=arcface"])
    assert cfg.train.sampler == "uniform"


def test_yaml_exponent_without_dot_is_a_float():
    cfg = build_config("puma", "mini", overrides=["train.lr=1e-4", "train.weight_decay=2"])
    assert cfg.train.lr == 1e-4 and cfg.train.weight_decay == 2.0
    with pytest.raises(UserError, match="train.lr must be a finite number > 0, got .fast."):
        build_config("puma", "mini", overrides=["train.lr=fast"])


def test_dry_run_prints_the_resolved_config_and_trains_nothing(tmp_path):
    import yaml
    from click.testing import CliRunner

    from umlbench.cli import cli
    from umlbench.config import to_dict

    res = CliRunner().invoke(cli, ["run", "--method", "puma", "--suite", "uml", "--dry-run",
                                   "--results-dir", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert "# evaluates after epochs (official rule): 21, 41, 61, 81" in res.output
    printed = yaml.safe_load(res.output)
    full = to_dict(build_config("puma", "uml"))
    # Every method argument is shown, defaults included (adapter scale, penalty weight, ...).
    assert printed["method_args"] == {**full["method_args"], "adapter_scale": 0.1,
                                      "use_adapters": True, "use_prompts": True,
                                      "ortho_scale": 1e-6, "variant": "", "positions": "grid"}
    # Every loss argument too (CurricularFace's EMA momentum).
    assert printed["loss"]["args"] == {**full["loss"]["args"], "momentum": 0.99}
    assert {k: v for k, v in printed.items() if k not in ("method_args", "loss")} == {
        k: v for k, v in full.items() if k not in ("method_args", "loss")}
    t = printed["train"]
    # The official PUMA command's values, as a user diffing against it would read them:
    # --batch_size_per_gpu 180 on --nproc_per_node=4 is 720 images per step.
    assert (t["epochs"], t["batch_size"], t["lr"], t["scheduler"], t["step_epochs"]) == (
        100, 720, 1e-4, "step", 20)
    assert t["schedule_granularity"] == "iteration"
    assert "# batch: 720 images per optimiser step, 720 per process on 1 process\n" in res.output
    assert "# lr schedule: step, set every iteration\n" in res.output
    assert (t["amp"], t["reshuffle"], t["eval_every"], t["eval_rule"]) == (
        "fp16", False, 20, "official")
    assert printed["eval"]["precision"] == "fp32"
    assert not (tmp_path / "r").exists()
    alias = CliRunner().invoke(cli, ["run", "--method", "puma", "--suite", "uml",
                                     "--print-config"])
    assert alias.output == res.output


def test_dry_run_shows_the_batch_per_process_granularity_and_issue_21_switches():
    import yaml
    from click.testing import CliRunner

    from umlbench.cli import cli

    res = CliRunner().invoke(cli, ["run", "--method", "puma", "--suite", "uml", "--dry-run",
                                   "--protocol", "fewshot-train", "--shots", "16",
                                   "--nproc", "4"])
    assert res.exit_code == 0, res.output
    assert "# batch: 720 images per optimiser step, 180 per process on 4 processes\n" \
        in res.output
    assert "# lr schedule: cosine, set every iteration\n" in res.output
    printed = yaml.safe_load(res.output)
    assert printed["method_args"]["positions"] == "official"
    assert printed["method_args"]["use_prompts"] is True
    assert printed["loss"]["args"]["init"] == "official"
    assert printed["train"]["schedule_granularity"] == "iteration"
    # The global-180 switch on 4 processes: 45 images each.
    res = CliRunner().invoke(cli, ["run", "--method", "puma", "--suite", "uml", "--dry-run",
                                   "--set", "train.batch_size=180", "--nproc", "4"])
    assert "# batch: 180 images per optimiser step, 45 per process on 4 processes\n" \
        in res.output
    # mini: its own 128 per step, one lr per epoch.
    res = CliRunner().invoke(cli, ["run", "--method", "puma", "--suite", "mini", "--dry-run"])
    assert "# batch: 128 images per optimiser step, 128 per process on 1 process\n" in res.output
    assert "# lr schedule: cosine, set every epoch\n" in res.output


def test_schedule_granularity_is_a_choice():
    with pytest.raises(UserError, match="train.schedule_granularity must be one of epoch, "
                                        "iteration"):
        build_config("puma", "mini", overrides=["train.schedule_granularity=step"])
