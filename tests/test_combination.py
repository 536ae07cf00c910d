"""Which options go together (launch/combination.py): every conflict of a run is refused before
anything is built, all of them in one line, each naming where its keys were set; and the
retired ``experiment.smoke`` key cannot switch off a run's divergence guard any more."""
import pytest
import yaml

from launch.build import load_run_config
from utils.config import config_from_dict, load_config
from utils.errors import UserError


@pytest.fixture
def kd_config(tmp_path):
    path = tmp_path / "kd.yaml"
    path.write_text(yaml.safe_dump({"distiller": {"name": "kd"}, "teacher": {"arch": "resnet8"},
                                    "runtime": {"device": "cpu"}}))
    return str(path)


def refusal(path, overrides):
    with pytest.raises(UserError) as err:
        load_run_config(path, overrides)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_every_conflict_is_named_in_one_line(kd_config):
    line = refusal(kd_config, ["solver.optimizer=dot", "runtime.compile=true", "solver.nesterov=true",
                               "solver.clip_grad_norm=5", "runtime.cuda_graph=true"])
    assert line.startswith("4 options conflict: (1) 'runtime.compile' in the command-line overrides "
                           "does not go with solver.optimizer=dot (in the command-line overrides)")
    for part in ["(2) 'solver.nesterov' in the command-line overrides", "DOT has no Nesterov variant",
                 "(3) 'solver.clip_grad_norm' in the command-line overrides",
                 "no one gradient norm to clip",
                 "(4) runtime.cuda_graph=true cannot run here: it needs a CUDA device; this run is on "
                 "cpu; DOT's two passes are not captured"]:
        assert part in line, part


def test_dot_with_a_method_without_a_distillation_loss_is_refused_before_the_run(kd_config):
    line = refusal(kd_config, ["solver.optimizer=dot", "distiller.name=vanilla"])
    assert line.startswith("'distiller.name' in the command-line overrides does not go with "
                           "solver.optimizer=dot (in the command-line overrides): Vanilla does not "
                           "return the task loss 'loss_ce' and a distillation loss apart")


def test_the_options_that_go_together_pass(kd_config):
    cfg = load_run_config(kd_config, ["solver.optimizer=dot", "runtime.amp=bf16"])
    assert cfg.solver.optimizer == "dot"
    assert load_run_config(kd_config, ["solver.clip_grad_norm=5"]).solver.clip_grad_norm == 5.0


def test_a_machine_conflict_is_not_judged_for_a_config_read_to_run_elsewhere(kd_config):
    cfg = load_run_config(kd_config, ["runtime.cuda_graph=true"], here=False)
    assert cfg.runtime.cuda_graph
    assert "DOT's two passes" in refusal(kd_config, ["runtime.cuda_graph=true", "solver.optimizer=dot"])


def test_experiment_smoke_written_by_hand_is_refused_in_one_line(kd_config):
    with pytest.raises(UserError) as err:
        load_config(kd_config, ["experiment.smoke=true"])
    assert str(err.value) == ("'experiment.smoke' in the command-line overrides is not a config key "
                              "any more: a smoke run is asked for with train.py --smoke (which turns "
                              "off the stop on a non-finite validation); a config cannot set it")


def test_a_smoke_config_carries_no_switch_and_an_older_checkpoints_config_still_loads(kd_config):
    smoke = load_run_config(kd_config, smoke=True)
    assert "smoke" not in smoke.to_dict()["experiment"]
    stored = smoke.to_dict()
    stored["experiment"]["smoke"] = True   # what checkpoints written before its retirement hold
    assert config_from_dict(stored) == smoke


def test_print_config_shows_a_gpu_recipe_on_a_machine_without_one(kd_config, capsys):
    """A login node reads the config a GPU job will run: the machine is not judged there, the
    options' conflicts with each other still are."""
    import train
    assert train.main(["--config", kd_config, "runtime.device=auto", "runtime.cuda_graph=true",
                       "--print-config"]) == 0
    assert "cuda_graph: true" in capsys.readouterr().out
    assert train.main(["--config", kd_config, "runtime.cuda_graph=true", "solver.optimizer=dot",
                       "--print-config"]) == 2
    assert "DOT's two passes are not captured" in capsys.readouterr().err


def test_a_method_that_needs_a_strong_view_is_refused_under_a_cuda_graph(kd_config):
    """The captured step's buffers hold what every batch has; a second view (MLKD's, or a user's
    method declaring ``needs_strong_view``) is refused by that declaration, not by a per-method flag."""
    line = refusal(kd_config, ["distiller.name=mlkd", "runtime.cuda_graph=true"])
    assert "MLKD reads a second (strong) view of each sample" in line
