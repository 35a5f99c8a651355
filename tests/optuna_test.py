"""sweeper_optuna as a drop-in for Hydra's Optuna sweeper: another Hydra app (tests/optuna_apps/formula.py,
an objective that is a formula) swept as its users sweep it, and its search space read as Hydra's
Optuna sweeper reads it."""

from __future__ import annotations

import importlib.util
import itertools
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hydra_plugins.sweeper_optuna._core import SearchSpace
from sweeper.config import ConfigError
from sweeper.trial import storage

APP = Path(__file__).parent / "optuna_apps" / "formula.py"


def sweep(tmp_path: Path, *overrides: str, launcher: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`python formula.py -m OVERRIDES` with its sweep in tmp_path/sweep."""
    command = [sys.executable, str(APP), "-m", f"hydra.sweep.dir={tmp_path / 'sweep'}", *launcher, *overrides]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)


def study(tmp_path: Path) -> optuna.Study:
    (name,) = optuna.get_all_study_names(storage(str(tmp_path / "sweep" / "optuna.journal")))
    return optuna.load_study(study_name=name, storage=storage(str(tmp_path / "sweep" / "optuna.journal")))


def jobs(tmp_path: Path) -> dict[int, dict]:
    """What each job saw (its config, its number, how many steps it reported), by job number."""
    seen = [json.loads(p.read_text()) for p in (tmp_path / "sweep").glob("*/job.json")]
    return {s["_job"]["num"]: s for s in seen}


def results(tmp_path: Path) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml"))


# What Hydra's Optuna sweeper (main) builds for each override form: its own tests' table, and more.
HYDRA_DISTRIBUTIONS = [
    ("key=choice(1,2)", CategoricalDistribution([1, 2])),
    ("key=1,2,3", CategoricalDistribution([1, 2, 3])),
    ("key=choice(true, false)", CategoricalDistribution([True, False])),
    ("key=choice('hello', 'world')", CategoricalDistribution(["hello", "world"])),
    ("key=choice('a,b', c)", CategoricalDistribution(["a,b", "c"])),
    ("key=shuffle(range(1,3))", CategoricalDistribution([1, 2])),
    ("key=range(1,3)", IntDistribution(1, 3)),
    ("key=range(0, 10, step=2)", IntDistribution(0, 10, step=2)),
    ("key=range(0.5, 5.5, step=1)", FloatDistribution(0.5, 5.5, step=1)),
    ("key=range(1, 3, step=0.5)", FloatDistribution(1, 3, step=0.5)),
    ("key=interval(1, 5)", FloatDistribution(1, 5)),
    ("key=int(interval(1, 5))", IntDistribution(1, 5)),
    ("key=tag(log, interval(1, 5))", FloatDistribution(1, 5, log=True)),
    ("key=tag(log, int(interval(1, 5)))", IntDistribution(1, 5, log=True)),
]


@pytest.mark.parametrize(
    ("override", "expected"), HYDRA_DISTRIBUTIONS, ids=[o for o, _ in HYDRA_DISTRIBUTIONS]
)
def test_each_override_form_is_the_distribution_hydras_optuna_sweeper_builds(override, expected):
    space = SearchSpace.parse({}, [override])
    actual = space.distributions["key"]
    if isinstance(expected, CategoricalDistribution):  # shuffle's order is random
        assert isinstance(actual, CategoricalDistribution) and sorted(map(str, actual.choices)) == sorted(
            map(str, expected.choices)
        )
    else:
        assert actual == expected


def test_plain_values_fix_their_keys_and_deletions_pass_through():
    space = SearchSpace.parse(
        {"x": "interval(0, 1)", "y": "choice(1, 2)", "lr": "0.1"}, ["y=0", "~z", "x=choice(3, 4)", "+w=5"]
    )
    assert space.distributions == {"x": CategoricalDistribution([3, 4])}  # the later x, as in Hydra
    assert space.fixed == {"y": "0", "lr": "0.1", "+w": "5"}
    assert space.deletions == ["~z"]


def test_sampled_strings_go_back_to_the_job_as_they_were():
    space = SearchSpace.parse({"opt": "choice(sgd, 'a,b', 'true', \"it's\", '1e-3')"}, [])
    parse = OverridesParser.create().parse_overrides
    for choice in space.distributions["opt"].choices:
        (override,) = parse(space.overrides(SimpleNamespace(params={"opt": choice})))
        assert override.value() == choice


@pytest.mark.parametrize(
    ("params", "arguments", "says"),
    [
        ({"x": "interval(1"}, [], "hydra.sweeper.params.x: cannot parse"),
        ({}, ["x=glob(*)"], "the override 'x=glob(*)'"),
    ],
)
def test_a_search_space_that_cannot_be_parsed_names_its_key(params, arguments, says):
    with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
        SearchSpace.parse(params, arguments)


def test_another_app_sweeps_as_with_hydras_optuna_sweeper(tmp_path):
    # Hydra's defaults: minimize, 2 trials per batch; the command line fixes y and deletes z.
    result = sweep(tmp_path, "y=0", "~z", "hydra.sweeper.n_trials=8")
    assert result.returncode == 0, result.stderr
    seen = jobs(tmp_path)
    assert sorted(seen) == list(range(8))
    assert all(s["y"] == 0 and "z" not in s for s in seen.values())
    assert all(-5.5 <= s["x"] <= 5.5 and (s["x"] * 2) % 1 == 0 for s in seen.values())
    trials = study(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 8
    assert all("y" not in t.params and t.user_attrs["y"] == "0" for t in trials)
    assert study(tmp_path).direction == optuna.study.StudyDirection.MINIMIZE
    assert result.stdout.count("Launching 2 jobs") == 4  # Hydra logs to stdout
    best = min(trials, key=lambda t: t.value)
    assert results(tmp_path) == {"name": "optuna", "best_params": best.params, "best_value": best.value}


def test_directions_list_gives_the_pareto_front(tmp_path):
    result = sweep(
        tmp_path, "objective=pair", "hydra.sweeper.direction=[minimize,minimize]", "hydra.sweeper.n_trials=10"
    )
    assert result.returncode == 0, result.stderr
    found = study(tmp_path)
    front = results(tmp_path)["solutions"]
    assert sorted(s["values"] for s in front) == sorted(t.values for t in found.best_trials)
    for a, b in itertools.permutations(front, 2):  # no solution dominates another
        assert (
            not all(p <= q for p, q in zip(a["values"], b["values"], strict=True))
            or a["values"] == b["values"]
        )


@pytest.mark.parametrize(
    ("objective", "directions", "error"),
    [
        ("pair", "minimize", "not a number"),
        ("text", "minimize", "not a number"),
        ("sphere", "[minimize,minimize]", "not a list of 2 numbers"),
        ("pair", "[minimize,minimize,maximize]", "the task returned 2 values for 3 directions"),
    ],
)
def test_a_wrong_return_fails_the_trial_and_counts_against_max_failure_rate(
    tmp_path, objective, directions, error
):
    result = sweep(tmp_path, f"objective={objective}", f"hydra.sweeper.direction={directions}")
    assert result.returncode == 1
    assert "trial 0 failed: the task returned " in result.stdout and error in result.stdout
    assert "error: 2 of 2 trials of a batch failed, above hydra.sweeper.max_failure_rate=0.0" in result.stderr
    assert [t.state for t in study(tmp_path).trials] == [TrialState.FAIL] * 2


def test_max_failure_rate_zero_stops_at_the_first_failed_batch_with_the_jobs_error(tmp_path):
    result = sweep(tmp_path, "objective=fail_odd")
    assert result.returncode == 1
    assert "trial 1 failed: RuntimeError: job 1 is odd" in result.stdout
    assert "RuntimeError: job 1 is odd" in result.stderr.splitlines()[-1]  # the job's own error, last
    assert [t.state for t in study(tmp_path).trials] == [TrialState.COMPLETE, TrialState.FAIL]


def test_max_failure_rate_half_lets_a_half_failed_batch_go_on(tmp_path):
    result = sweep(tmp_path, "objective=fail_odd", "hydra.sweeper.max_failure_rate=0.5")
    assert result.returncode == 0, result.stderr
    states = [t.state for t in study(tmp_path).trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL] * 3
    assert result.stdout.count("failed: RuntimeError") == 3


SAMPLERS = {
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "grid": "GridSampler",
    "cmaes": "CmaEsSampler",
    "nsgaii": "NSGAIISampler",
    "qmc": "QMCSampler",
    "gp": "GPSampler",
}


@pytest.mark.slow
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_each_sampler_runs_the_study(tmp_path, sampler):
    if sampler == "gp" and importlib.util.find_spec("torch") is None:
        pytest.skip("Optuna's GPSampler needs PyTorch (CI installs it)")
    space = ["x=interval(-5.0, 5.0)"] if sampler in ("cmaes", "gp", "qmc") else []
    result = sweep(tmp_path, f"hydra/sweeper/sampler={sampler}", *space)
    assert result.returncode == 0, result.stderr
    assert f"({SAMPLERS[sampler]}, minimize)" in result.stdout
    assert [t.state for t in study(tmp_path).trials] == [TrialState.COMPLETE] * 6


def test_the_grid_sampler_covers_its_grid_once_and_stops(tmp_path):
    result = sweep(
        tmp_path,
        "hydra/sweeper/sampler=grid",
        "x=choice(-1, 1)",
        "y=range(-1, 1)",
        "hydra.sweeper.n_trials=20",
    )
    assert result.returncode == 0, result.stderr
    tried = sorted((s["x"], s["y"]) for s in jobs(tmp_path).values())
    assert tried == sorted(itertools.product([-1, 1], [-1, 0, 1]))  # range's stop included, as elsewhere
    assert results(tmp_path)["best_value"] == 1


def test_custom_search_space_extends_each_trial(tmp_path):
    result = sweep(tmp_path, "hydra.sweeper.custom_search_space=formula.configure", "max_z_from_x=0.3")
    assert result.returncode == 0, result.stderr
    for s in jobs(tmp_path).values():
        assert abs(s["z"] - s["x"]) <= 0.3 and 0 <= s["w"] <= 1
    best = results(tmp_path)["best_params"]
    assert set(best) == {"x", "y", "z", "+w"}


def test_custom_search_space_may_not_suggest_a_fixed_key(tmp_path):
    result = sweep(tmp_path, "hydra.sweeper.custom_search_space=formula.configure", "z=0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: hydra.sweeper.custom_search_space suggests z, which the overrides fix"
    )


PRUNING = [
    "objective=prune",
    "hydra/sweeper/pruner=threshold",
    "hydra.sweeper.pruner.upper=10",
    "hydra.sweeper.pruner.n_warmup_steps=3",
]


@pytest.mark.parametrize(
    "launcher",
    [
        (),
        ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2"),
        pytest.param(("hydra/launcher=submitit_local",), marks=pytest.mark.slow),
    ],
    ids=["basic", "joblib", "submitit_local"],
)
@pytest.mark.slow
@pytest.mark.parametrize("objective", ["prune", "raise_pruned"])
def test_another_app_prunes_through_sweeper_trial_report(tmp_path, launcher, objective):
    result = sweep(
        tmp_path, *PRUNING, f"objective={objective}", "hydra.sweeper.n_trials=8", launcher=launcher
    )
    assert result.returncode == 0, result.stderr
    seen = {s["_job"]["num"]: s for s in jobs(tmp_path).values()}
    trials = study(tmp_path).trials
    assert len(trials) == 8
    assert {t.state for t in trials} == {TrialState.COMPLETE, TrialState.PRUNED}  # both happen here
    for job, trial in enumerate(trials):
        value = seen[job]["x"] ** 2 + seen[job]["y"] ** 2
        stopped = value > 10  # the threshold pruner's rule, first applied at step 3
        assert trial.state == (TrialState.PRUNED if stopped else TrialState.COMPLETE)
        assert sorted(trial.intermediate_values) == list(range(4 if stopped else 10))
        assert seen[job]["_job"]["steps"] == (4 if stopped else 10) and not seen[job]["_job"]["jax"]


def test_report_outside_a_sweep_does_nothing_and_imports_neither_optuna_nor_jax():
    code = (
        "import sys; from sweeper.trial import report; "
        "print(report(1.0, 0), 'optuna' in sys.modules, 'jax' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split() == ["False", "False", "False"], result.stderr


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (
            ["hydra/sweeper/sampler=motpe"],
            "error: hydra.sweeper.sampler: the 'motpe' sampler was removed in Optuna 4.0",
        ),
        (["hydra.sweeper.sampler._target_=optuna.samplers.NoSuchSampler"], "error: hydra.sweeper.sampler: "),
        (
            ["hydra/sweeper/pruner=median", "hydra.sweeper.pruner._target_=nope.Pruner"],
            "error: hydra.sweeper.pruner: ",
        ),
        (["hydra.sweeper.direction=up"], "error: hydra.sweeper.direction must be minimize or maximize"),
        (
            ["hydra.sweeper.custom_search_space=formula.nothing"],
            "error: hydra.sweeper.custom_search_space: cannot import",
        ),
        (["hydra.sweeper.params.x='interval(1'"], "error: hydra.sweeper.params.x: cannot parse"),
        (
            ["hydra/sweeper/sampler=grid", "x=interval(0, 1)"],
            "error: hydra/sweeper/sampler=grid: x is continuous",
        ),
        (["hydra.sweeper.max_failure_rate=2"], "error: hydra.sweeper.max_failure_rate must be in [0, 1]"),
        (
            ["hydra/sweeper/pruner=median", "hydra.sweeper.direction=[minimize,minimize]"],
            "error: hydra.sweeper.pruner: Optuna prunes single-objective studies only",
        ),
    ],
)
def test_bad_settings_end_in_one_line_before_anything_is_written(tmp_path, overrides, says):
    result = sweep(tmp_path, *overrides)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(says), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "sweep").exists()


@pytest.mark.slow
def test_the_pruning_example_in_the_docs_is_the_file_that_runs_and_prunes(tmp_path):
    root = Path(__file__).parents[1]
    example = root / "examples" / "pruning"
    text = (root / "docs" / "search.md").read_text()
    shown = text[text.index("A complete app,\nexamples/pruning/my_app.py:") :]
    assert shown.split("```python\n")[1].split("```")[0] == (example / "my_app.py").read_text()
    assert shown.split("```yaml\n")[1].split("```")[0] == (example / "my_app.yaml").read_text()
    command = [sys.executable, str(example / "my_app.py"), "-m"]
    command += [f"hydra.sweep.dir={tmp_path / 'sweep'}", f"hydra.run.dir={tmp_path / 'run'}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    states = [t.state for t in study(tmp_path).trials]
    assert len(states) == 30 and set(states) == {TrialState.COMPLETE, TrialState.PRUNED}
