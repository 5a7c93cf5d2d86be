"""Nonsense settings stop before anything starts: one line naming the key, exit 2, nothing written.

Through the real commands (`python -m pgpong.run`, `python -m pgpong.sweep`) for the cases that
used to train silently, end in a traceback or allocate for minutes; in-process for what every
key allows (pgpong/config.py::RULES), the memory estimate and the sweep's joint extremes.
"""
import os
import subprocess
import sys
import time
from dataclasses import fields, is_dataclass

import pytest

from pgpong import config
from pgpong.engine import memory
from pgpong.engine.envs import episode_cap
from pgpong.errors import PgpongError
from pgpong.sweep.spec import SpecError, load_spec
from tests.conftest import compose_cfg

# A tiny budget beside each bad setting: were the setting let through, the run would end in
# seconds (and leave mlflow.db and outputs/ behind) instead of training 10,000 episodes.
SMALL = {"episodes": "1", "batch_size": "1", "H": "8", "env.max_episode_steps": "50", "env.num_envs": "2"}


def run_measured(args, cwd, module="pgpong.run", timeout=120):
    """`python -m module args` in cwd: (exit code, stderr lines, peak RSS in MB, CPU seconds)."""
    out, err = cwd.parent / f"{cwd.name}.out", cwd.parent / f"{cwd.name}.err"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=cwd, stdout=o, stderr=e, env=env)
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            os.wait4(proc.pid, 0)
            pytest.fail(f"{module} {args} still running after {timeout} s")
        time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)      # reaped here: Popen must not wait again
    lines = [ln for ln in err.read_text(errors="replace").splitlines() if ln.strip()]
    return proc.returncode, lines, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def assert_one_line_and_nothing_started(cwd, code, lines, rss_mb, cpu_s, expected, keep=()):
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {expected}"), lines
    # checked, not started: ~0.7 s of CPU. (Peak RSS cannot tell: Linux counts the forking parent's
    # resident size in a child's ru_maxrss, so under a large pytest process it reads ~450 MB.)
    assert cpu_s < 5, (rss_mb, cpu_s)
    assert sorted(p.name for p in cwd.iterdir()) == sorted(keep)   # no mlflow.db, outputs/, optuna.db


# ---- the training command -----------------------------------------------------------------------

@pytest.mark.parametrize("bad, expected", [
    ("env.max_episode_steps=-1", "env.max_episode_steps=-1: must be a positive integer or null"),
    ("env.max_episode_steps=0", "env.max_episode_steps=0: must be a positive integer or null"),
    ("env.repeat_action_probability=2", "env.repeat_action_probability=2.0: must be in [0, 1) or null"),
    ("lr=inf", "lr=inf: must be > 0 and finite"),
    ("tracking.flush_every_s=nan", "tracking.flush_every_s=nan: must be >= 0 and finite"),
    ("+foo=1", "foo: unknown key; allowed at the top level: H, lr,"),
    ("env.frameskip=0", "env.frameskip=0: must be a positive integer or null"),
    ("H=1000000000", "H=1000000000, env.num_envs=2: a run needs about "),
    ("env.num_envs=100000", "H=8, env.num_envs=100000: a run needs about "),
])
def test_a_nonsense_setting_stops_the_run_command_in_one_line(tmp_path, bad, expected):
    key = bad.lstrip("+").partition("=")[0]
    args = [f"{k}={v}" for k, v in SMALL.items() if k != key] + [bad]
    code, lines, rss, cpu = run_measured(args, tmp_path)
    assert_one_line_and_nothing_started(tmp_path, code, lines, rss, cpu, expected)
    if "a run needs" in expected:
        assert "more than the " in lines[0] and " available" in lines[0]


def test_a_nonsense_value_in_a_multirun_stops_every_job(tmp_path):
    code, lines, rss, cpu = run_measured(["-m", "lr=1e-3,inf"] + [f"{k}={v}" for k, v in SMALL.items()], tmp_path)
    assert_one_line_and_nothing_started(tmp_path, code, lines, rss, cpu, "lr=inf: must be > 0 and finite")


# ---- the sweep command --------------------------------------------------------------------------

LR = "params:\n  lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n"


@pytest.mark.parametrize("text, expected", [
    (None, "d: sweep: a directory"),
    ("dir named d", "{cwd}/d: sweep: a directory"),
    ("", "s.yaml: (top): empty file"),
    ("- a\n- list\n", "s.yaml: (top): must be a mapping"),
    ("episodes: 2\nbogus: 1\n" + LR, "s.yaml: bogus: unknown key"),
    ("episodes: 2\nparams:\n  lr: {type: float, low: 1.0e-4, high: .inf}\n", "s.yaml: params.lr: lr=inf: must be > 0"),
    ("episodes: 2\nparams:\n  env.repeat_action_probability: {type: float, low: 0, high: 1}\n",
     "s.yaml: params.env.repeat_action_probability: env.repeat_action_probability=1.0: must be in [0, 1)"),
    ("episodes: 2\nparams:\n  crop.top: {type: int, low: 100, high: 190}\n  crop.bottom: {type: int, low: 120, high: 195}\n",
     "s.yaml: params: crop.top=190 crop.bottom=120 (sampled together): crop.top=190, crop.bottom=120: need"),
    ("episodes: 2\nparams:\n  seed: {type: int, low: 0, high: 3}\n", "s.yaml: params.seed: seed: set by the sweep itself"),
    ("episodes: 2\nfixed: [env.frameskip=0]\n" + LR, "s.yaml: fixed: env.frameskip=0: must be a positive integer"),
])
def test_a_bad_spec_stops_the_sweep_command_in_one_line(tmp_path, text, expected):
    if text is None or text == "dir named d":       # sweep=d/ (a path), sweep=d (a name, found in the folder)
        (tmp_path / "d").mkdir()
        name, keep = "d/" if text is None else "d", ["d"]
    else:
        (tmp_path / "s.yaml").write_text(text)
        name, keep = "s.yaml", ["s.yaml"]
    code, lines, rss, cpu = run_measured([f"sweep={name}", "n_trials=1"], tmp_path, module="pgpong.sweep")
    assert_one_line_and_nothing_started(tmp_path, code, lines, rss, cpu, expected.format(cwd=tmp_path), keep)


def test_a_bad_override_on_the_sweep_command_is_one_line(tmp_path):
    (tmp_path / "s.yaml").write_text("episodes: 2\n" + LR)
    code, lines, rss, cpu = run_measured(["sweep=s.yaml", "tracking.flush_every_s=nan"], tmp_path, module="pgpong.sweep")
    assert_one_line_and_nothing_started(tmp_path, code, lines, rss, cpu,
                                        "s.yaml: fixed: tracking.flush_every_s=nan: must be >= 0", ["s.yaml"])


# ---- what each key allows -----------------------------------------------------------------------

def schema_leaf_keys(schema, prefix="") -> set[str]:
    keys = set()
    for f in fields(schema):
        if is_dataclass(f.default_factory):
            keys |= schema_leaf_keys(f.default_factory, f"{prefix}{f.name}.")
        elif f.name in config.OPTION_SCHEMAS:
            for option in config.OPTION_SCHEMAS[f.name].values():
                keys |= schema_leaf_keys(option, f"{f.name}.")
        else:
            keys.add(prefix + f.name)
    return keys


def test_every_key_of_the_schema_has_a_rule():
    assert schema_leaf_keys(config.Config) == set(config.RULES)


ALLOWED = [
    "H=1", "lr=1e-9", "lr=10", "batch_size=1", "gamma=1", "gamma=1e-6", "decay_rate=0", "decay_rate=0.999", "seed=0",
    "seed=123456789012345678901234567890", "episodes=1", "dtype=float64", "checkpoint_every=1", "checkpoint_keep=1",
    "log_every_s=0", "log_every_s=1e6", "env.frameskip=1", "env.frameskip=null", "env.repeat_action_probability=0",
    "env.repeat_action_probability=0.999", "env.repeat_action_probability=null", "env.max_episode_steps=1",
    "env.max_episode_steps=null", "env.num_threads=16", "tracking.flush_every_s=0", "tracking.backend=none",
    "crop.top=0", "crop.bottom=210", "crop.left=0", "crop.right=160", "crop.stride=7", "input.kind=stack",
    "actions.kind=three", "optim=adam", "optim.eps=1", "baseline=value", "lr=${decay_rate}",
]
REFUSED = [
    ("H=0", "H=0: must be a positive integer"),
    ("lr=0", "lr=0.0: must be > 0 and finite"),
    ("lr=-1e-3", "lr=-0.001: must be > 0 and finite"),
    ("lr=nan", "lr=nan: must be > 0 and finite"),
    ("lr=-inf", "lr=-inf: must be > 0"),
    ("batch_size=0", "batch_size=0: must be a positive integer"),
    ("gamma=0", "gamma=0.0: must be in (0, 1]"),
    ("gamma=nan", "gamma=nan: must be in (0, 1]"),
    ("decay_rate=1", "decay_rate=1.0: must be in [0, 1)"),
    ("decay_rate=-0.1", "decay_rate=-0.1: must be in [0, 1)"),
    ("seed=-1", "seed=-1: must be >= 0"),
    ("episodes=-3", "episodes=-3: must be a positive integer"),
    ("stop_at=-21", "stop_at=-21.0: must be a running reward in (-21, 21) or null"),
    ("stop_at=nan", "stop_at=nan: must be a running reward in (-21, 21) or null"),
    ("checkpoint_every=0", "checkpoint_every=0: must be a positive integer"),
    ("checkpoint_keep=0", "checkpoint_keep=0: must be a positive integer"),
    ("log_every_s=-1", "log_every_s=-1.0: must be >= 0 and finite"),
    ("log_every_s=inf", "log_every_s=inf: must be >= 0 and finite"),
    ("env.frameskip=-2", "env.frameskip=-2: must be a positive integer or null"),
    ("env.max_episode_steps=0", "env.max_episode_steps=0: must be a positive integer or null"),
    ("env.repeat_action_probability=1", "env.repeat_action_probability=1.0: must be in [0, 1) or null"),
    ("env.repeat_action_probability=-0.5", "env.repeat_action_probability=-0.5: must be in [0, 1) or null"),
    ("env.repeat_action_probability=nan", "env.repeat_action_probability=nan: must be in [0, 1) or null"),
    ("env.num_envs=0", "env.num_envs=0: must be a positive integer"),
    ("env.num_threads=-1", "env.num_threads=-1: must be >= 0 (0: one emulator thread per core, shared among env.groups)"),
    ("env.groups=0", "env.groups=0: must be a positive integer"),
    ("env.emulator_nice=-1", "env.emulator_nice=-1: must be >= 0"),
    ("env.groups=3", "env.groups=3: must be a positive divisor of env.num_envs=16"),
    ("env.num_threads=17", "env.num_threads=17: must be <= env.num_envs=16"),
    ("tracking.uri=", "tracking.uri=: must be a non-empty string"),
    ("tracking.experiment=''", "tracking.experiment=: must be a non-empty string"),
    ("tracking.flush_every_s=-1", "tracking.flush_every_s=-1.0: must be >= 0 and finite"),
    ("tracking.flush_every_s=inf", "tracking.flush_every_s=inf: must be >= 0 and finite"),
    ("crop.top=-1", "crop.top=-1: must be >= 0"),
    ("crop.bottom=211", "crop.top=35, crop.bottom=211: need 0 <= top < bottom <= 210"),
    ("crop.right=0", "crop.right=0: must be a positive integer"),
    ("crop.left=160", "crop.left=160, crop.right=160: need 0 <= left < right <= 160"),
    ("crop.stride=0", "crop.stride=0: must be >= 1"),
    ("dtype=float16", "dtype=float16: must be one of float32, float64"),
    ("input.kind=both", "input.kind=both: must be one of diff, raw, stack"),
    ("actions.kind=four", "actions.kind=four: must be one of two, three"),
    ("tracking.backend=wandb", "tracking.backend=wandb: must be one of mlflow, none"),
    ("optim.eps=0", "optim.eps=0.0: must be > 0 and finite"),
    ("optim=adam optim.beta1=1", "optim.beta1=1.0: must be in [0, 1)"),
    ("optim=adam optim.beta2=inf", "optim.beta2=inf: must be in [0, 1)"),
    ("baseline=value baseline.lr=inf", "baseline.lr=inf: must be > 0 and finite"),
    ("baseline.kind=value", "baseline.kind=value: that option has the keys kind, lr, this baseline has kind; "
                            "choose with baseline=<option> (standardize, none, mean, value), not baseline.kind"),
    ("optim=adam optim.name=rmsprop",
     "optim.name=rmsprop: that option has the keys name, eps, this optim has name, beta1, beta2, eps"),
    ("optim.name=sgd", "optim.name=sgd: must be one of rmsprop, adam"),
    ("+foo=1", "foo: unknown key; allowed at the top level: H, lr,"),
    ("++env.foo=1", "env.foo: unknown key; allowed in 'env': id, frameskip,"),
    ("+baseline.lr=0.1", "baseline.kind=standardize: that option has the keys kind, this baseline has kind, lr"),
    ("+baseline.foo=0.1", "baseline.foo: unknown key; allowed in 'baseline': kind"),
    ("~H", "H: missing; every key needs a value"),
    ("~baseline", "baseline: missing; every key needs a value; choose one of standardize, none, mean, value"),
    ("lr=${nope}", "lr: Interpolation key 'nope' not found"),
    ("H=${lr}", "H: While dereferencing interpolation '${lr}'"),
    ("crop=1.5", "crop=1.5: no such option; choose one of fix, karpathy"),
    ("=1", "=1: no key before '='"),
]


@pytest.mark.parametrize("override", ALLOWED)
def test_a_sensible_value_is_allowed(override):
    config.validate(compose_cfg([override]))


@pytest.mark.parametrize("overrides, expected", REFUSED)
def test_a_nonsense_value_is_refused_naming_the_key(overrides, expected):
    with pytest.raises(PgpongError) as e:
        config.validate(compose_cfg(overrides.split(" ")))
    assert str(e.value).startswith(expected) and "\n" not in str(e.value), str(e.value)


def test_every_rule_is_exercised_by_a_refusal():
    refused_keys = {o.lstrip("+~").partition("=")[0] for overrides, _ in REFUSED for o in overrides.split(" ")}
    always_ok = {k for k, rule in config.RULES.items() if rule is config.ANY}
    assert set(config.RULES) - always_ok - refused_keys == set()


# ---- the memory estimate ------------------------------------------------------------------------

def test_the_memory_estimate_counts_the_real_arrays():
    small = memory.estimate(compose_cfg(["H=8", "env.num_envs=2", "env.max_episode_steps=50"]))
    base = memory.estimate(compose_cfg([]))
    # W1 (6400, 200) float32 = 5.12 MB, times 6 copies and RMSProp's cache
    assert base["model"] == (6400 * 200 + 200) * 4 * 7
    # 16 envs, rows: 1024 of the ring + 1024 ended together; per row: hs 800 B, dlogp, P(UP), reward, input
    assert base["episodes"] == 2048 * 16 * (800 + 4 + 4 + 8 + memory.ROW_BYTES + 5 * memory.NONZEROS)
    assert memory.estimate(compose_cfg(["optim=adam"]))["model"] == (6400 * 200 + 200) * 4 * 11
    assert memory.estimate(compose_cfg(["dtype=float64"]))["model"] == 2 * base["model"]
    assert sum(small.values()) < 2**30 < sum(memory.estimate(compose_cfg(["H=100000"])).values())


def test_a_run_that_cannot_fit_is_refused_with_the_estimate_and_the_limit():
    cfg = compose_cfg([])
    config.check_memory(cfg, available=2**40)
    with pytest.raises(PgpongError) as e:
        config.check_memory(cfg, available=100 * 2**20)
    message = str(e.value)
    assert message.startswith("H=200, env.num_envs=16: a run needs about ") and "model 34.2 MB" in message
    assert message.endswith("more than the 100.0 MB available; lower H, env.num_envs or env.max_episode_steps")


def test_available_memory_is_read_from_the_machine():
    free = memory.available()
    assert free is not None and 0 < free
    with open("/proc/meminfo") as f:
        total = int(next(ln for ln in f if ln.startswith("MemTotal:")).split()[1]) * 1024
    assert free <= total


@pytest.mark.parametrize("overrides, cap", [
    ([], 27_000),                                  # ALE/Pong-v5: 108,000 frames at frameskip 4
    (["env.max_episode_steps=200"], 200),
    (["env=pong_v0"], 54_000),                     # Pong-v0: frameskip 2..4, the fewest frames per step
    (["env.frameskip=1"], 108_000),
    (["env.id=no_module_here:Game-v0"], 54_000),   # not registered: looked up, never imported
])
def test_the_episode_cap_comes_from_the_registry_without_imports(tmp_path, monkeypatch, overrides, cap):
    (tmp_path / "no_module_here.py").write_text("raise SystemExit('imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert episode_cap(compose_cfg(overrides).env) == cap
    assert "no_module_here" not in sys.modules


# ---- sweep specs: the search space inside what the config allows ----------------------------

def check_spec(tmp_path, text):
    from pgpong.sweep.study import check_params
    (tmp_path / "s.yaml").write_text(text)
    spec = load_spec(tmp_path / "s.yaml")
    check_params(spec, spec.fixed + [f"episodes={spec.episodes}"])


def test_sizes_that_fit_alone_but_not_together_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "available", lambda: 4 * 2**30)
    text = "episodes: 2\nparams:\n  H: {type: int, low: 8, high: 2000}\n  env.num_envs: {type: categorical, choices: [2, 256]}\n"
    with pytest.raises(SpecError, match=r"params: H=2000 env.num_envs=256 \(sampled together\): H=2000, env.num_envs=256: "
                                        r"a run needs about"):
        check_spec(tmp_path, text)
    monkeypatch.setattr(memory, "available", lambda: 64 * 2**30)
    check_spec(tmp_path, text)


def test_group_choices_are_combined_with_the_other_params(tmp_path):
    text = "episodes: 2\nparams:\n  optim: {type: categorical, choices: [rmsprop, adam]}\n  decay_rate: {type: float, low: 0.5, high: 1.0}\n"
    with pytest.raises(SpecError, match=r"params.decay_rate: decay_rate=1.0: must be in \[0, 1\)"):
        check_spec(tmp_path, text)
    text = "episodes: 2\nfixed: [optim=adam]\nparams:\n  optim.beta1: {type: float, low: 0.5, high: 0.9}\n  optim: {type: categorical, choices: [adam, rmsprop]}\n"
    with pytest.raises(SpecError, match=r"params.optim.beta1: optim.beta1: unknown key|params: optim=rmsprop"):
        check_spec(tmp_path, text)
