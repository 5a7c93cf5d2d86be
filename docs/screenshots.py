"""Remake the screenshots of docs/ui.md (docs/img/*.png) from a tiny real multirun and sweep.

    python docs/screenshots.py        # ~3 minutes on 2 cores; needs Debian's chromium and pip install -e ".[test]"

In a temporary folder: the crop-fix multirun (2 crops x 2 seeds, 30 short episodes each) into
an `mlflow server`, and an 8-trial sweep into optuna.db served by `optuna-dashboard`; headless
Chromium clicks through both UIs as docs/ui.md describes. Each PNG is reduced to a 256-colour
palette to stay small.
"""
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402  (comes with matplotlib)
from mlflow.tracking import MlflowClient  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

from tests.browser import (chart_card, chart_view, close_assistant, expand_parent_runs, group_by, launch, new_page,  # noqa: E402
                           open_runs, select_all_runs, toggle_columns)
from tests.servers import mlflow_server_on, optuna_dashboard  # noqa: E402

IMG = ROOT / "docs" / "img"
MULTIRUN = ["-m", "experiment=crop_fix", "seed=0,1", "episodes=30", "batch_size=1", "H=8",
            "env.max_episode_steps=400", "env.num_envs=2"]
SPEC = """\
description: learning rate and crop, a tiny demonstration study
episodes: 6
report_every: 1
objective: {kind: final}
sampler: {name: random, seed: 1}
pruner: {name: none}
params:
  lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
  crop: {type: categorical, choices: [karpathy, fix]}
"""
SWEEP = ["sweep=spec.yaml", "n_trials=8", "study=crop_lr_demo", "tracking=none", "H=8", "batch_size=1",
         "env.max_episode_steps=200", "env.num_envs=2"]


def pgpong(module: str, args: list[str], cwd: Path) -> None:
    print(f"+ python -m {module} {' '.join(args)}", file=sys.stderr)
    subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})


def save(shot: bytes, name: str) -> None:
    """The screenshot as a palette PNG in docs/img/."""
    path = IMG / name
    Image.open(io.BytesIO(shot)).convert("RGB").quantize(colors=256).save(path, optimize=True)
    print(f"{path}: {path.stat().st_size // 1024} KB", file=sys.stderr)


def mlflow_shots(browser, uri: str) -> None:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("crop_fix")
    page = new_page(browser)
    [run] = client.search_runs([exp.experiment_id], "params.seed = '1' and params.crop.bottom = '185'")
    page.goto(f"{uri}/#/experiments/{exp.experiment_id}/runs/{run.info.run_id}?workflowType=machine_learning")
    note = page.get_by_text("Engine:").first
    note.wait_for()
    close_assistant(page)
    note.scroll_into_view_if_needed()
    page.wait_for_timeout(1000)
    save(page.screenshot(), "mlflow-run.png")

    open_runs(page, uri, exp.experiment_id)
    expand_parent_runs(page)
    toggle_columns(page, ["Dataset", "Source", "Models", "crop.bottom", "seed"])   # hide 3, show 2
    select_all_runs(page)
    page.wait_for_timeout(500)
    save(page.screenshot(), "mlflow-runs.png")

    page.reload()     # selection cleared, columns kept
    page.get_by_text("matching runs").wait_for()
    group_by(page, "crop.bottom")
    chart_view(page, "running_reward")
    card = chart_card(page, "episode/running_reward")
    card.locator(".js-plotly-plot").wait_for()
    page.wait_for_timeout(1000)
    save(page.screenshot(), "mlflow-chart.png")
    card.locator('[data-component-id="fullscreen_button_chartcard"]').click()
    page.get_by_role("dialog").locator(".js-plotly-plot").wait_for()
    page.wait_for_timeout(1000)
    save(page.screenshot(), "mlflow-chart-full.png")
    page.close()


def optuna_shot(browser, url: str) -> None:
    page = new_page(browser)
    page.goto(f"{url}/dashboard/studies/1")
    page.locator(".js-plotly-plot").first.wait_for()
    page.wait_for_timeout(1000)
    save(page.screenshot(), "optuna-history.png")
    page.close()


def main() -> int:
    IMG.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pgpong-shots-") as tmp:
        tmp = Path(tmp)
        pgpong("pgpong.run", MULTIRUN, tmp)                # ./mlflow.db, the default tracking store
        (tmp / "sweep").mkdir()
        (tmp / "sweep" / "spec.yaml").write_text(SPEC)
        pgpong("pgpong.sweep", SWEEP, tmp / "sweep")
        with sync_playwright() as p:
            browser = launch(p)
            with mlflow_server_on(tmp) as uri:
                mlflow_shots(browser, uri)
            with optuna_dashboard(f"sqlite:///{tmp}/sweep/optuna.db") as url:
                optuna_shot(browser, url)
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
