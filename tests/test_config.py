from dataclasses import dataclass, field

import pytest

from lmforge.cli import main
from lmforge.config import ConfigError, field_comments, load_config
from lmforge.stages.pretrain import PretrainConfig, apply_depth_preset


def test_yaml_recipe_then_dotted_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("run_dir: runs/x\noptim:\n  lr: 0.001\n  schedule: wsd\nloop:\n  max_steps: 5\n")
    cfg = load_config(PretrainConfig, [str(recipe), "--optim.lr", "3e-4", "--loop.max_steps=7",
                                       "--eval.sample_prompts", "a", "b", "--compile"])
    assert cfg.run_dir == "runs/x" and cfg.optim.schedule == "wsd"
    assert cfg.optim.lr == 3e-4 and cfg.loop.max_steps == 7
    assert cfg.eval.sample_prompts == ["a", "b"] and cfg.compile is True
    repeated = load_config(PretrainConfig, ["--eval.sample_prompts", "a", "--eval.sample_prompts", "b", "c"])
    assert repeated.eval.sample_prompts == ["a", "b", "c"]  # a repeated flag collects its values


def test_overriding_one_field_keeps_the_stages_own_group_defaults(tmp_path):
    # DPO's optim defaults (lr 5e-6, warmup 10) are not OptimConfig's class defaults; setting
    # one field of the group, from YAML or the command line, must not reset the others.
    from lmforge.stages.dpo import DPOConfig

    cfg = load_config(DPOConfig, ["--optim.lr", "1e-4"])
    assert (cfg.optim.lr, cfg.optim.warmup_steps, cfg.optim.weight_decay) == (1e-4, 10, 0.0)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("loop:\n  max_steps: 7\n")
    cfg = load_config(DPOConfig, [str(recipe)])
    assert (cfg.loop.max_steps, cfg.loop.eval_every_steps) == (7, 50)


def test_unknown_key_suggests_nearest_name():
    with pytest.raises(ConfigError, match="did you mean 'max_steps'"):
        load_config(PretrainConfig, ["--loop.max_step", "3"])


def test_type_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="loop.max_steps: expected int"):
        load_config(PretrainConfig, ["--loop.max_steps", "many"])
    with pytest.raises(ConfigError, match="optim.schedule"):
        load_config(PretrainConfig, ["--optim.schedule", "linear"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("loop: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml:2: invalid YAML"):
        load_config(PretrainConfig, [str(bad)])


def test_negative_numbers_are_values_not_flags():
    @dataclass
    class C:
        x: float = 0.0
        ys: list[int] = field(default_factory=list)

    cfg = load_config(C, ["--x", "-1.5", "--ys", "-1", "2"])
    assert cfg.x == -1.5 and cfg.ys == [-1, 2]


def test_depth_dial_derives_shape_and_lr():
    cfg = PretrainConfig(depth=12)
    apply_depth_preset(cfg, vocab_size=32768)
    m = cfg.model
    assert (m.hidden_size, m.num_attention_heads, m.head_dim) == (768, 6, 128)
    assert m.intermediate_size == 2048 and m.num_hidden_layers == 12
    assert cfg.optim.lr == pytest.approx(0.02 / 768 ** 0.5)
    cfg = PretrainConfig(depth=20)
    apply_depth_preset(cfg, vocab_size=32000)
    assert (cfg.model.hidden_size, cfg.model.num_attention_heads) == (1280, 10)
    assert cfg.model.vocab_size == 32000


def test_fields_are_documented_and_help_lists_them(capsys):
    assert "the one dial" in field_comments(PretrainConfig)["depth"]
    assert main(["pretrain", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--optim.lr" in out and "--loop.max_steps" in out


def test_cli_reports_config_errors_without_traceback(capsys):
    assert main(["pretrain", "--nope", "1"]) == 2
    assert "unknown config key 'nope'" in capsys.readouterr().err
