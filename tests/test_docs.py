"""docs/math.md stays true: every `file::function` it names exists, every equation names its code
and its test, its math uses only constructs GitHub renders, its worked example is what the real
pgpong functions compute, and README links to it.

    python tests/test_docs.py      # print the worked example's results block from its inputs
"""
import ast
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp

from pgpong.core import policy
from pgpong.core.gradient import episode_gradient, episode_matrix
from pgpong.core.preprocess import sparse_input
from pgpong.core.returns import advantages, discount

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "math.md"
README = ROOT / "README.md"

# `pgpong/x.py::func`, `pgpong/x.py::Class.method`, `tests/test_x.py::test_y[case-id]`
REF = re.compile(r"`((?:pgpong|tests)/[\w/]+\.py)::([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)?)(\[[^\]`]*\])?`")
FENCE = re.compile(r"^```(\w*)\s*$")
HEADING = re.compile(r"^#{1,6} ")
INLINE_MATH = re.compile(r"\$`([^`]*)`\$")
MATH_MODULES = ("core/policy", "core/gradient", "core/returns", "core/optim")

# TeX macros the page may use: all are in MathJax's default TeX input, which GitHub renders.
# Add a new one only after checking it renders on GitHub.
ALLOWED_MACROS = {
    "alpha", "beta", "gamma", "delta", "epsilon", "rho", "sigma", "pi", "theta", "nabla", "Delta",
    "mathbf", "mathbb", "mathcal", "text", "operatorname", "textstyle",
    "frac", "tfrac", "sqrt", "sum", "min", "max", "log", "hat", "bar",
    "top", "odot", "cdot", "mid", "partial", "pm", "sim", "ldots", "vdots", "neq", "ge", "iff", "in", "leftarrow",
    "qquad", "quad", "bigl", "bigr", "Bigl", "Bigr", "lVert", "rVert",
    "begin", "end",
}
ALLOWED_ENVS = {"aligned", "bmatrix", "cases"}


def page_text() -> str:
    return PAGE.read_text()


def refs(text: str) -> list[tuple[str, str, str]]:
    """Every (file, name, case) the page names, in order; case is '' or '[id]'."""
    return [m.groups(default="") for m in REF.finditer(text)]


def defined_names(path: Path) -> set[str]:
    """Top-level functions and classes of a module, and Class.method for their methods."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            names.update(f"{node.name}.{m.name}" for m in node.body
                         if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef)))
    return names


def blocks(text: str):
    """(kind, first_line_index, body) of every fenced block: kind is the fence's info string."""
    lines = text.splitlines()
    i, out = 0, []
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        assert j < len(lines), f"docs/math.md line {i + 1}: fenced block never closed"
        out.append((m.group(1), i, "\n".join(lines[i + 1:j])))
        i = j + 1
    return out


def prose(text: str) -> str:
    """The page without fenced blocks, inline math and code spans: what Markdown itself reads."""
    lines, keep, inside = text.splitlines(), [], False
    for line in lines:
        if FENCE.match(line) or (inside and line.strip() == "```"):
            inside = not inside
            continue
        if not inside:
            keep.append(line)
    out = INLINE_MATH.sub(" ", "\n".join(keep))
    return re.sub(r"`[^`]*`", " ", out)


def math_chunks(text: str) -> list[str]:
    """Every piece of TeX on the page: ```math blocks and $`...`$ inline spans."""
    chunks = [body for kind, _, body in blocks(text) if kind == "math"]
    return chunks + INLINE_MATH.findall(prose_keep_math(text))


def prose_keep_math(text: str) -> str:
    """The page without fenced blocks (inline math kept)."""
    keep, inside = [], False
    for line in text.splitlines():
        if FENCE.match(line) or (inside and line.strip() == "```"):
            inside = not inside
            continue
        if not inside:
            keep.append(line)
    return "\n".join(keep)


# --- the references ---------------------------------------------------------------------------

def test_page_names_code_and_tests():
    found = refs(page_text())
    assert len({f for f, _, _ in found if f.startswith("pgpong/")}) >= 5, found
    assert len({f for f, _, _ in found if f.startswith("tests/")}) >= 4, found


def test_every_named_function_and_test_exists():
    missing = []
    for file, name, _ in sorted(set(refs(page_text()))):
        path = ROOT / file
        if not path.is_file():
            missing.append(f"{file} (no such file)")
        elif name not in defined_names(path):
            missing.append(f"{file}::{name}")
        elif file.startswith("tests/") and not name.split(".")[-1].startswith("test"):
            missing.append(f"{file}::{name} (not a test)")
    assert not missing, "docs/math.md names what no longer exists: " + ", ".join(missing)


def test_every_named_parametrized_case_is_collected():
    cases = sorted({(f, n + c) for f, n, c in refs(page_text()) if c})
    if not cases:
        pytest.skip("the page names no parametrized case")
    files = sorted({f for f, _ in cases})
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *files],
                         cwd=ROOT, capture_output=True, text=True, timeout=120).stdout
    collected = set(out.split())
    missing = [f"{f}::{c}" for f, c in cases if f"{f}::{c}" not in collected]
    assert not missing, f"docs/math.md names test cases pytest does not collect: {missing}"


def test_every_equation_names_its_code_and_its_test():
    """Each ```math block is followed, before the next heading, by a pgpong/ and a tests/ reference."""
    text = page_text()
    lines = text.splitlines()
    bad = []
    for kind, start, _ in blocks(text):
        if kind != "math":
            continue
        end = next((k for k in range(start + 1, len(lines)) if HEADING.match(lines[k])), len(lines))
        after = refs("\n".join(lines[start:end]))
        if not any(f.startswith("pgpong/") for f, _, _ in after) or not any(f.startswith("tests/") for f, _, _ in after):
            bad.append(start + 1)
    assert not bad, f"docs/math.md: equations at lines {bad} name no code or no test before the next heading"


def test_page_covers_every_function_of_the_math_modules():
    """A new function in policy/gradient/returns/optim must be explained (and named) on the page."""
    named = {(f, n) for f, n, _ in refs(page_text())}
    missing = [f"pgpong/{m}.py::{n}" for m in MATH_MODULES
               for n in sorted(defined_names(ROOT / "pgpong" / f"{m}.py"))
               if "." not in n and not n.startswith("_") and (f"pgpong/{m}.py", n) not in named]
    assert not missing, f"docs/math.md does not explain: {missing}"


# --- GitHub rendering -------------------------------------------------------------------------

def test_math_uses_only_constructs_github_renders():
    text = page_text()
    assert "$$" not in text, "use ```math blocks for display math, not $$"
    stray = [ln for ln in prose(text).splitlines() if "$" in ln]
    assert not stray, f"write inline math as $`...`$ (a bare $ is read as Markdown): {stray}"
    chunks = math_chunks(text)
    assert len(chunks) > 50
    for tex in chunks:
        flat = tex.replace(r"\{", "").replace(r"\}", "")
        depth = 0
        for ch in flat:
            depth += {"{": 1, "}": -1}.get(ch, 0)
            assert depth >= 0, f"unbalanced braces in: {tex}"
        assert depth == 0, f"unbalanced braces in: {tex}"
        begins, ends = re.findall(r"\\begin\{(\w+)\}", tex), re.findall(r"\\end\{(\w+)\}", tex)
        assert sorted(begins) == sorted(ends) and set(begins) <= ALLOWED_ENVS, tex
        assert "\\\\" not in tex or begins, f"line breaks only inside an environment: {tex}"
        macros = set(re.findall(r"\\([A-Za-z]+)", tex))
        assert macros <= ALLOWED_MACROS, f"unchecked TeX macros {macros - ALLOWED_MACROS} in: {tex}"


def test_readme_links_the_math_page_and_relative_links_resolve():
    readme = README.read_text()
    assert re.search(r"^## How it works\s*$", readme, re.M), "README needs a '## How it works' section"
    assert "](docs/math.md)" in readme, "README's How it works section must link docs/math.md"
    for doc in (README, PAGE):
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if re.match(r"\w+:", target) or target.startswith("#"):
                continue
            path = (doc.parent / target.split("#")[0]).resolve()
            assert path.exists(), f"{doc.name} links {target}, which does not exist"


# --- the claims the page makes that no other test checks --------------------------------------

@pytest.mark.parametrize("actions", ["two", "three"])
def test_score_function_has_zero_mean_so_a_baseline_adds_no_bias(actions):
    """sum_a pi(a|x) * (gradient of b * log pi(a|x)) = 0, at the logit and for W1, W2."""
    rng = np.random.default_rng(0)
    D, H, b = 30, 5, 1.7
    params = policy.init_params(rng, D, H, actions, False, np.float64)
    x = rng.choice([-1, 0, 0, 0, 1], size=D).astype(np.int8)
    idx = np.flatnonzero(x)
    h = policy.hidden(params["W1"], idx, x[idx])
    p = policy.probs(params["W2"], h)
    pi = np.array([p, 1 - p]) if p.ndim == 0 else p
    X = episode_matrix([idx], [x[idx]], D, np.float64)
    mean_logit = sum(pi[a] * policy.dlogp(p, a) for a in range(len(pi)))
    np.testing.assert_allclose(mean_logit, 0, atol=1e-15)
    mean = {k: 0 for k in ("W1", "W2")}
    for a in range(len(pi)):
        g = policy.backward(params, X, h[None, :], (b * policy.dlogp(p, a))[None, ...])
        for k in mean:
            mean[k] = mean[k] + pi[a] * g[k]
        assert np.abs(g["W2"]).max() > 1e-3   # each sample's gradient is not zero, only their mean
    for k in mean:
        np.testing.assert_allclose(mean[k], 0, atol=1e-14, err_msg=k)


@pytest.mark.parametrize("actions", ["two", "three"])
def test_sparse_backward_equals_dense_backward(actions):
    rng = np.random.default_rng(1)
    T, D, H = 25, 80, 6
    params = policy.init_params(rng, D, H, actions, False, np.float64)
    Xd = rng.choice([-1, 0, 0, 0, 0, 0, 1], size=(T, D)).astype(np.float64)
    Xd[:, 7] = 0                                                  # an input never on
    Hs = np.maximum(Xd @ params["W1"], 0)
    dlogit = rng.standard_normal(T if actions == "two" else (T, 3))
    sparse = policy.backward(params, sp.csr_matrix(Xd), Hs, dlogit.copy())
    dense = policy.backward(params, Xd, Hs, dlogit.copy())
    for k in dense:
        np.testing.assert_allclose(sparse[k], dense[k], rtol=1e-12, atol=1e-14, err_msg=k)
    assert np.all(sparse["W1"][7] == 0)


def test_batch_gradient_is_the_sum_of_its_episode_gradients(cfg_factory):
    """The trainer adds each finished episode's gradient into its buffer; update() uses the sum."""
    from pgpong.engine import trainer
    from pgpong.engine.rollout import Episode
    from pgpong.engine.state import new_state
    cfg = cfg_factory(["H=4", "crop.bottom=51", "crop.right=16", "baseline=value"])
    rng = np.random.default_rng(2)
    state = new_state(cfg, rng)
    state.params["Wv"] = rng.standard_normal(4).astype(state.params["W1"].dtype)
    D = state.params["W1"].shape[0]
    expected = {k: np.zeros_like(v, np.float64) for k, v in state.params.items()}
    for T in (5, 9):
        buf = SimpleNamespace(idx=[], val=[], hs=[], dlogps=[], p_up=[], rewards=[])
        frames = (rng.random((T + 1, D)) < 0.2).astype(np.uint8)
        for t in range(T):
            idx, val = sparse_input(frames[t + 1], frames[t], cfg.input.kind)
            h = policy.hidden(state.params["W1"], idx, val)
            p = policy.probs(state.params["W2"], h)
            a = policy.sample(rng, p)
            buf.idx.append(idx); buf.val.append(val); buf.hs.append(h)
            buf.dlogps.append(policy.dlogp(p, a)); buf.p_up.append(float(p)); buf.rewards.append(0.0)
        buf.rewards[-1] = 1.0 if T == 5 else -1.0
        buf.rewards[2] = -1.0
        grads, _ = episode_gradient(state.params, episode_matrix(buf.idx, buf.val, D, state.params["W1"].dtype),
                                    np.vstack(buf.hs), np.asarray(buf.dlogps, state.params["W1"].dtype),
                                    np.asarray(buf.rewards), cfg.gamma, cfg.baseline.kind)
        for k in expected:
            expected[k] += grads[k]
        dtype = state.params["W1"].dtype
        trainer.finish_episode(state, Episode.from_steps(
            buf.idx, buf.val, hs=np.vstack(buf.hs), dlogps=np.asarray(buf.dlogps, dtype),
            p_up=np.asarray(buf.p_up, dtype), rewards=np.asarray(buf.rewards), version=np.zeros(T, np.int64)),
            cfg.gamma, cfg.baseline.kind)
    for k in expected:
        np.testing.assert_allclose(state.grad_buffer[k], expected[k], rtol=1e-5, atol=1e-7, err_msg=k)
    norm = np.sqrt(sum(float(np.sum(g ** 2)) for g in expected.values()))
    stats = trainer.update(state, trainer.optimizer(cfg))
    assert stats["train/grad_norm"] == pytest.approx(norm, rel=1e-5)
    assert all(not g.any() for g in state.grad_buffer.values())


# --- the worked example -----------------------------------------------------------------------

RESULT_KEYS = ["Hs", "z", "p", "y_minus_p", "G", "G_mean", "G_std", "V", "adv_standardize", "adv_mean",
               "adv_none", "adv_value", "dlogit", "dW2", "dU", "dW1", "dWv", "dbv", "value_loss"]


def example_block(marker: str) -> dict:
    """The `name = literal` lines of the ```text block after <!-- worked-example:MARKER -->."""
    text = page_text()
    at = text.index(f"<!-- worked-example:{marker} -->")
    body = next(b for kind, start, b in blocks(text[at:]) if kind == "text")
    values = {}
    for line in body.splitlines():
        name, _, literal = line.partition("=")
        values[name.strip()] = ast.literal_eval(literal.strip())
    return values


def worked_example(inp: dict) -> dict:
    """Run the page's inputs through the real pgpong functions, step by step as the trainer does."""
    W1, W2 = np.array(inp["W1"], float), np.array(inp["W2"], float)
    Xd = np.array(inp["X"], np.int8)
    D = W1.shape[0]
    params = {"W1": W1, "W2": W2, "Wv": np.array(inp["Wv"], float), "bv": np.asarray(inp["bv"], float)}
    idx = [np.flatnonzero(x).astype(np.int32) for x in Xd]
    val = [x[i] for x, i in zip(Xd, idx)]
    Hs = np.vstack([policy.hidden(W1, i, v) for i, v in zip(idx, val)])
    p = np.array([policy.probs(W2, h) for h in Hs])
    dlogps = np.array([policy.dlogp(pt, a) for pt, a in zip(p, inp["a"])])
    r = np.array(inp["r"], float)
    X = episode_matrix(idx, val, D, np.float64)
    G = discount(r, inp["gamma"])
    V = policy.value(params, Hs)
    adv = {k: advantages(G, k, V) for k in ("standardize", "mean", "none", "value")}
    pol = {k: params[k] for k in ("W1", "W2")}
    grads, _ = episode_gradient(pol, X, Hs, dlogps, r, inp["gamma"], "standardize")
    dlogit = dlogps * adv["standardize"]
    dU = policy.backward(pol, sp.identity(len(r), format="csr"), Hs, dlogit)["W1"]   # X = I gives X^T dU = dU
    vgrads, vinfo = episode_gradient(params, X, Hs, dlogps, r, inp["gamma"], "value")
    out = {"Hs": Hs, "z": Hs @ W2, "p": p, "y_minus_p": dlogps, "G": G, "G_mean": G.mean(), "G_std": G.std(), "V": V,
           **{f"adv_{k}": v for k, v in adv.items()}, "dlogit": dlogit, "dW2": grads["W2"], "dU": dU,
           "dW1": grads["W1"], "dWv": vgrads["Wv"], "dbv": vgrads["bv"], "value_loss": vinfo["value_loss"]}
    assert list(out) == RESULT_KEYS
    return out


def format_results(results: dict) -> str:
    """The results block as the page shows it: six decimals, no negative zeros."""
    def fmt(v):
        a = np.asarray(v, float)
        if a.ndim == 0:
            return f"{float(a) + 0.0:.6f}"
        return "[" + ", ".join(fmt(x) for x in a) + "]"
    width = max(map(len, results))
    return "\n".join(f"{k.ljust(width)} = {fmt(v)}" for k, v in results.items())


def test_worked_example_matches_pgpong_functions():
    shown = example_block("results")
    computed = worked_example(example_block("inputs"))
    assert list(shown) == RESULT_KEYS, "the page's results block must list exactly " + ", ".join(RESULT_KEYS)
    for k in RESULT_KEYS:
        np.testing.assert_allclose(np.asarray(shown[k], float), computed[k], rtol=0, atol=5e-7, err_msg=k)


def test_worked_example_numbers_in_the_equations_are_the_computed_ones():
    """Every number with 3+ decimals in the page's equations is a computed value, rounded."""
    section = page_text()
    computed = np.concatenate([np.ravel(np.abs(v)) for v in worked_example(example_block("inputs")).values()])
    shown = [n for tex in math_chunks(section) for n in re.findall(r"\d+\.\d{3,}", tex)]
    assert len(shown) >= 30, shown
    for n in shown:
        half_ulp = 0.5 * 10.0 ** -len(n.split(".")[1]) + 1e-12
        assert np.any(np.abs(computed - float(n)) <= half_ulp), f"{n} in the equations of docs/math.md is no computed value"


if __name__ == "__main__":
    print(format_results(worked_example(example_block("inputs"))))
