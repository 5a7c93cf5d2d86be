"""A study's summary as small files: the trials table, the parameter importances and their plot.

    python -m pgpong.sweep.summary storage=docs/results/fast_search/study.journal study=fast out=docs/results/fast_search

Reads the study from its storage (an RDB URL or a journal file) and writes into `out`:
  trials.csv        one row per trial: number, state, value, seconds, where it was pruned, whether
                    each seed passed a time_to threshold (reached_seed_<s>), params
  trials.md         the same as a Markdown table, best first, with the importances under it
  importances.csv   each param's importance for the objective (Optuna's fANOVA over complete trials)
  importances.png/.svg   the importances as a bar chart
A journal file copied into the repository is enough to rebuild all of them.
"""
import csv
import io
import math
import sys
from pathlib import Path

from pgpong import cliargs
from pgpong.errors import PgpongError, entry_point
from pgpong.files import write_atomic
from pgpong.paths import resolve_path

KEYS = ("storage", "study", "out")
MIN_COMPLETE = 3      # fewer complete trials than this: no importances (fANOVA needs some spread)


def load_study(storage: str, study: str | None, launch_dir: Path):
    import optuna
    from pgpong.sweep.study import make_storage
    if "://" not in storage and not resolve_path(storage, launch_dir).is_file():
        raise PgpongError(f"storage={storage}: no such journal file")
    backend, shown = make_storage(storage, launch_dir, Path(storage))
    names = [s.study_name for s in optuna.get_all_study_summaries(backend)]
    if not names:
        raise PgpongError(f"storage={storage}: holds no study")
    name = study or (names[0] if len(names) == 1 else None)
    if name not in names:
        raise PgpongError(f"study={study}: not in {shown}; it holds {', '.join(names)}")
    return optuna.load_study(study_name=name, storage=backend)


def trial_rows(study) -> list[dict]:
    """One dict per trial, params as their own columns."""
    names = sorted({k for t in study.trials for k in t.params})
    reached = sorted({k for t in study.trials for k in t.user_attrs if k.startswith("reached_seed_")})
    rows = []
    for t in study.trials:
        steps = sorted(t.intermediate_values)
        rows.append({"trial": t.number, "state": t.state.name,
                     # a pruned trial's value is Optuna's copy of its last intermediate: not the objective
                     "value": round(t.value, 3) if t.state.name == "COMPLETE" else "",
                     "duration_s": t.user_attrs.get("duration_s", ""),
                     "pruned_at_step": steps[-1] if t.state.name == "PRUNED" and steps else "",
                     "last_intermediate": round(t.intermediate_values[steps[-1]], 3) if steps else "",
                     **{k: t.user_attrs.get(k, "") for k in reached},     # time_to: passed the threshold
                     **{k: _short(t.params.get(k, "")) for k in names}})
    return rows


def _short(v):
    return float(f"{v:.4g}") if isinstance(v, float) else v


def importances(study) -> dict[str, float]:
    """{param: importance} over the complete trials, largest first; {} when there are too few."""
    import optuna
    from optuna.trial import TrialState
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < MIN_COMPLETE:
        return {}
    return dict(optuna.importance.get_param_importances(study))


def as_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    if rows:
        w = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return out.getvalue()


def as_markdown(study, rows: list[dict], imp: dict[str, float]) -> str:
    def key(r):      # complete trials by value, then pruned ones by how far they got, then the rest
        return (r["value"] == "", r["value"] if r["value"] != "" else math.inf,
                -(r["pruned_at_step"] or -math.inf), r["last_intermediate"] if r["last_intermediate"] != "" else math.inf,
                r["trial"])
    head = list(rows[0]) if rows else []
    lines = [f"# Study `{study.study_name}`: {len(rows)} trials, direction {study.direction.name.lower()}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(r[h]) for h in head) + " |" for r in sorted(rows, key=key)]
    lines += ["", "## Importances", ""]
    if imp:
        lines += ["| param | importance |", "|---|---|"] + [f"| {k} | {v:.3f} |" for k, v in imp.items()]
        lines += ["", f"Optuna's fANOVA over the {sum(r['state'] == 'COMPLETE' for r in rows)} complete trials "
                      "(pruned ones have no final value); with this few trials it ranks, it does not measure."]
    else:
        lines += [f"Fewer than {MIN_COMPLETE} complete trials: no importances."]
    return "\n".join(lines) + "\n"


def plot_importances(imp: dict[str, float], title: str, base: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(imp)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(names) + 1.2))
    ax.barh(names, [imp[n] for n in names], color="tab:blue")
    ax.set_xlabel("importance (fANOVA, complete trials)")
    ax.set_title(title)
    fig.tight_layout()
    paths = []
    for ext in ("png", "svg"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=100, metadata={"Date": None} if ext == "svg" else None)
        write_atomic(base.with_suffix(f".{ext}"), buf.getvalue())
        paths.append(base.with_suffix(f".{ext}"))
    plt.close(fig)
    return paths


def summarize(storage: str, study_name: str | None, out: Path, launch_dir: Path) -> list[Path]:
    study = load_study(storage, study_name, launch_dir)
    rows = trial_rows(study)
    imp = importances(study)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "trials.csv", out / "trials.md"]
    write_atomic(files[0], as_csv(rows))
    write_atomic(files[1], as_markdown(study, rows, imp))
    if imp:
        write_atomic(out / "importances.csv", as_csv([{"param": k, "importance": round(v, 4)} for k, v in imp.items()]))
        files += [out / "importances.csv"]
        files += plot_importances(imp, f"study {study.study_name}: what mattered", out / "importances")
    return files


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = cliargs.parse(sys.argv[1:] if argv is None else argv, KEYS, usage=__doc__)
    if "storage" not in args:
        raise PgpongError("storage: missing (an Optuna RDB URL or a journal file)")
    launch_dir = Path.cwd()
    out = resolve_path(args.get("out", "."), launch_dir)
    for f in summarize(args["storage"], args.get("study"), out, launch_dir):
        print(f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
