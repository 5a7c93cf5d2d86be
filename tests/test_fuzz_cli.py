"""Property-based fuzz of what users type: any override or sweep spec is a config or one line.

Hypothesis generates overrides (the schema's real keys, group names and junk keys, with values
of every kind: nan, inf, huge, negative, empty, lists, unicode, interpolations) and sweep spec
files (valid-looking and broken), and runs them through the same checks the commands run before
anything starts (`launch.compose`, `cli.precheck`, `sweep.study.check`). The outcome must be a
valid config or a PgpongError (exit 2 with one line), never any other exception. The examples
are derandomized (the same every run) and the budget keeps the whole file near 30 s.
"""
import contextlib
import io
import math

import pytest
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from pgpong import config
from pgpong.cli import precheck
from pgpong.errors import PgpongError, say_error
from pgpong.launch import compose, config_groups, group_options
from tests.conftest import run_cli

FUZZ = settings(max_examples=80, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

GROUPS = config_groups()
KEYS = sorted(config.RULES) + GROUPS
JUNK_KEYS = ["foo", "H.x", "env.", ".lr", "crop.top.x", "hydra.job.chdir", "baseline.lr", "optim.beta1", "ключ", "a b",
             "lr lr", "=", "$", "${lr}", "", "'lr'"]
SPECIAL = ["nan", "-nan", "inf", "-inf", "+inf", "1e309", "-1e309", "0", "-0", "-1", "1e-320", "null", "~", "", " ",
           "true", "false", "${lr}", "${H}", "${nope}", "${oc.env:NOPE}", "${now:%H}", "???", "[1,2]", "[]", "{a: 1}",
           "{}", "'quoted'", '"x"', "1,2", "a b", "0x10", "1_000", "9" * 5000, "-" + "9" * 40, "1" * 30, "Pong-v0",
           "ALE/Pong-v5", "\u00e9t\u00e9", "\U0001f3d3", "\\", "'", "[[[[[1]]]]]", "interval(0,1)", "range(1,3)",
           "choice(a,b)", "shuffle(1,2)", "glob(*)", "x=y", "1.5", "200.0", "float32", "three", "adam"]
for group in GROUPS:
    SPECIAL += group_options(group)

values = st.one_of(
    st.sampled_from(SPECIAL),
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.integers(min_value=-3, max_value=300).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12),
    st.lists(st.integers(-3, 3), max_size=3).map(lambda xs: "[" + ",".join(map(str, xs)) + "]"),
)
overrides = st.lists(
    st.tuples(st.sampled_from(["", "", "", "+", "++", "~"]), st.one_of(st.sampled_from(KEYS + JUNK_KEYS), st.text(max_size=8)),
              st.one_of(values, st.none()))
    .map(lambda t: f"{t[0]}{t[1]}" if t[2] is None else f"{t[0]}{t[1]}={t[2]}"),
    min_size=1, max_size=4)


def assert_one_line(e: PgpongError) -> None:
    """The error as the commands print it (errors.say_error) is one non-empty line."""
    with contextlib.redirect_stderr(io.StringIO()) as err:
        say_error(e)
    assert str(e).strip() and len(err.getvalue().splitlines()) == 1, repr(str(e))


def composed_or_one_line(args: list[str]):
    """compose(args) -> a config or a PgpongError of one line; anything else fails the test."""
    try:
        cfg = compose(args)
    except PgpongError as e:
        assert_one_line(e)
        event("refused")
        return None
    event("valid config")
    config.validate(cfg)        # a config compose returned is one validate accepts
    return cfg


@FUZZ
@given(overrides)
@example(["lr=1e-3", "H=16", "crop=fix"])
def test_any_overrides_compose_to_a_valid_config_or_one_line(args):
    composed_or_one_line(args)


@settings(FUZZ, max_examples=50)
@given(st.lists(st.tuples(st.sampled_from(sorted(config.RULES)), values).map(lambda t: f"{t[0]}={t[1]}"),
                min_size=1, max_size=3))
def test_any_values_of_real_keys_compose_or_fail_in_one_line(args):
    """Real keys with every kind of value: what passes is within what RULES allows."""
    cfg = composed_or_one_line(args)
    if cfg is not None:
        for key in ("lr", "gamma", "decay_rate", "log_every_s", "tracking.flush_every_s"):
            assert math.isfinite(config._get(cfg, key))


@settings(FUZZ, max_examples=20)
@given(st.lists(st.one_of(overrides.map(lambda xs: xs[0]),
                          st.sampled_from(["--cfg", "job", "-c", "-m", "--multirun", "--resolve", "-p", "lr",
                                           "--config-dir", "nowhere", "lr=1,2,inf", "H=range(1,3)"])),
                min_size=1, max_size=4))
def test_the_training_commands_precheck_exits_2_or_passes(argv):
    """`python -m pgpong.run ARGV` checked as its first step: it returns (the app may start) or exits 2."""
    with contextlib.redirect_stderr(io.StringIO()) as err, contextlib.redirect_stdout(io.StringIO()):
        try:
            precheck(argv)
        except SystemExit as e:
            assert e.code in (0, 2), (argv, e.code)
            if e.code == 2:
                lines = err.getvalue().strip().splitlines()
                assert len(lines) == 1 and lines[0].startswith("error: "), err.getvalue()


# ---- sweep specs ---------------------------------------------------------------------------------

numbers = st.one_of(st.integers(-5, 500), st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0, 1, 10**30]),
                    st.text(max_size=4), st.booleans(), st.none())
param = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["float", "int"]), "low": numbers, "high": numbers},
                          optional={"log": st.one_of(st.booleans(), numbers), "step": numbers, "choices": st.lists(numbers)}),
    st.fixed_dictionaries({"type": st.just("categorical"),
                           "choices": st.lists(st.one_of(numbers, st.sampled_from(SPECIAL)), max_size=3)},
                          optional={"low": numbers}),
    numbers, st.lists(numbers, max_size=2),
)
spec = st.fixed_dictionaries(
    {"episodes": st.one_of(st.integers(-2, 5), numbers)},
    optional={
        "params": st.one_of(st.dictionaries(st.one_of(st.sampled_from(KEYS + JUNK_KEYS + ["seed", "episodes"]),
                                                      st.text(max_size=6)), param, max_size=2), numbers),
        "n_trials": numbers, "seeds": st.one_of(st.lists(st.integers(-1, 3), max_size=3), numbers),
        "direction": st.sampled_from(["maximize", "minimize", "up", 1]),
        "objective": st.one_of(st.fixed_dictionaries({"kind": st.sampled_from(["final", "last_k", "auc", "time_to", "x"])},
                                                     optional={"k": numbers, "threshold": numbers,
                                                               "measure": st.sampled_from(["episodes", "steps", "hours"])}),
                               numbers),
        "fixed": st.one_of(st.lists(overrides.map(lambda xs: xs[0]), max_size=2), numbers),
        "sampler": st.one_of(st.fixed_dictionaries({"name": st.sampled_from(["tpe", "random", "grid"])},
                                                   optional={"seed": numbers}), numbers),
        "pruner": st.one_of(st.fixed_dictionaries({"name": st.sampled_from(["median", "hyperband", "none", "x"])},
                                                  optional={"min_resource": numbers}), numbers),
        "report_every": numbers, "aggregate": st.sampled_from(["mean", "max", "sum"]), "bogus": numbers,
    })
well_formed_param = st.one_of(       # passes the spec's own checks: what is left is the config's
    st.builds(lambda low, span, log: {"type": "float", "low": low, "high": low + span, "log": log and low > 0},
              st.floats(-10, 1e6), st.floats(1e-6, 1e12), st.booleans()),
    st.builds(lambda low, span: {"type": "int", "low": low, "high": low + span}, st.integers(-5, 10**6),
              st.integers(1, 10**12)),
    st.builds(lambda choices: {"type": "categorical", "choices": choices},
              st.lists(st.one_of(st.sampled_from(SPECIAL), st.integers(-2, 10**9), st.floats()), min_size=1, max_size=3)),
)
well_formed_spec = st.fixed_dictionaries(
    {"episodes": st.integers(1, 5),
     "params": st.dictionaries(st.sampled_from(sorted(config.RULES) + GROUPS + ["foo", "seed"]), well_formed_param,
                               min_size=1, max_size=2)},
    optional={"fixed": st.lists(overrides.map(lambda xs: xs[0]), max_size=1)})
spec_text = st.one_of(
    well_formed_spec.map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
    spec.map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
    st.sampled_from(["", "\n", "# only a comment\n", "- a\n- list\n", "just a string\n", "42\n", "null\n", "{}\n",
                     "params: [\n", "a: b: c\n", "\t- tab\n", "episodes: 3\nparams:\n  lr: &x {type: float}\n  H: *x\n",
                     "episodes: 3\nparams: {lr: {type: float, low: 1.0e-4, high: 1.0e-2}}\n", "episodes: 3\nparams: {lr: {type: float, low: 1e-4, high: 1e-2}}\n"]),
    st.text(max_size=40),
)


@settings(FUZZ, max_examples=50)
@example(text="episodes: 3\nparams:\n  lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n"
              "  H: {type: int, low: 8, high: 64, step: 8}\n  crop: {type: categorical, choices: [karpathy, fix]}\n",
         name="spec.yaml", extra=["n_trials=2"])
@given(spec_text, st.sampled_from(["spec.yaml", "spec.yml", "dir"]),
       st.lists(st.sampled_from(["n_trials=2", "n_trials=0", "n_trials=\u00b2", "episodes=3", "episodes=-1", "study=a b",
                                 "study=x\n", "lr=inf", "+foo=1", "seed=1", "storage=x"]), max_size=2))
def test_any_sweep_spec_is_checked_or_refused_in_one_line(tmp_path_factory, text, name, extra):
    from pgpong.sweep.study import check
    folder = tmp_path_factory.mktemp("spec")
    path = folder / name
    if name == "dir":
        path.mkdir()
    else:
        path.write_text(text, encoding="utf-8")
    try:
        p = check([f"sweep={path}", *extra], folder)
    except PgpongError as e:
        assert_one_line(e)
        event("refused: " + ("spec" if ": params" not in str(e) and ": fixed" not in str(e) else "config"))
        return
    event("valid sweep")
    config.validate(p["cfg"])
    assert list(folder.iterdir()) == [path]         # checking opened and wrote nothing


@settings(FUZZ, max_examples=15)
@given(st.binary(max_size=64))
def test_a_binary_file_as_a_spec_is_one_line(tmp_path_factory, data):
    from pgpong.sweep.study import check
    path = tmp_path_factory.mktemp("spec") / "bin.yaml"
    path.write_bytes(data)
    with pytest.raises(PgpongError):
        check([f"sweep={path}"], path.parent)


# ---- a handful through the real commands ----------------------------------------------------

@pytest.mark.parametrize("args", [
    ["lr=${nope}"], ["~H"], ["baseline.kind=value"], ["H=${lr}"], ["\u043a\u043b\u044e\u0447=1"], ["+env.foo=[1,2]"],
    ["H=" + "9" * 5000], ["-m", "lr=1e-3,nan"],
])
def test_real_training_command_gives_one_line(tmp_path, args):
    proc = run_cli(args, cwd=tmp_path, timeout=120)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("text, extra", [
    (b"\xff\xfe\x00binary", []),
    (b"episodes: 3\nparams: {seed: {type: int, low: 0, high: 3}}\n", []),
    (b"episodes: 3\nparams: {lr: {type: float, low: 1.0e-4, high: 1.0e-2}}\n", ["study=a\nb"]),   # a typed line break
])
def test_real_sweep_command_gives_one_line(tmp_path, text, extra):
    (tmp_path / "s.yaml").write_bytes(text)
    proc = run_cli(["sweep=s.yaml", *extra], cwd=tmp_path, module="pgpong.sweep", timeout=120)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: s.yaml: "), proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["s.yaml"]
