"""The README is the user's reference: it must list every flag with its current default."""
import dataclasses
import re

from conftest import REPO, run_script

from src.pretrain.config import PretrainConfig
from src.synthetic.config import GenConfig
from src.train.config import TrainConfig

README = (REPO / "README.md").read_text()


def test_every_config_key_is_documented_with_its_current_default():
    for cls in (TrainConfig, GenConfig, PretrainConfig):
        for f in dataclasses.fields(cls):
            default = f"`{f.default}`" if f.default != "" else "(empty)"
            assert f"| `{f.name}` | {default} |" in README, f"README config table is stale for {cls.__name__}.{f.name}"


def test_every_script_flag_is_documented():
    keyed = {"train.py": TrainConfig, "gen_synthetic.py": GenConfig, "pretrain.py": PretrainConfig}
    for script in ("train.py", "gen_synthetic.py", "pseudo_label.py", "make_folds.py", "prepare_demo.py", "infer.py",
                   "score.py", "ablate.py", "runs.py", "eda.py", "label_errors.py", "auto_label.py",
                   "import_reviews.py", "active_learning.py", "pretrain.py"):
        help_text = run_script(script, "--help").stdout
        flags = set(re.findall(r"--[a-z][a-z0-9-]+", help_text)) - {"--help"}
        if script in keyed:  # config keys are documented in the key tables, by their key name
            flags = {f for f in flags if f.replace("--", "").replace("-", "_").removeprefix("no_")
                     not in {f.name for f in dataclasses.fields(keyed[script])}}
        missing = sorted(f for f in flags if f"`{f}" not in README)
        assert not missing, f"{script}: flags missing from README: {missing}"


def test_ci_runs_the_readme_test_command():
    assert "make test" in README and "make test" in (REPO / ".ci" / "run").read_text()
