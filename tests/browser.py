"""A real headless Chromium driven by Playwright, and the MLflow UI pages the tests and docs visit.

    from tests.browser import browser      # pytest fixture (session scope): a playwright Browser

Chromium comes from Debian's `chromium` package (.ci/run installs it when missing); Playwright's
own browser download is not used. Locally, a missing browser or playwright skips the test with
the command that installs it; under CI (CI set in the environment) it fails instead, since CI
installs both.

The MLflow helpers drive the UI of MLflow 3 as a person would: open an experiment's runs in
"Model training" mode, expand a parent run, group by a param, switch to the chart view.
"""
import os
import shutil

import pytest

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 900}
UI_TIMEOUT_MS = 30_000
RUN_NAME_EXPANDER = ('[data-component-id="codegen_mlflow_app_src_experiment-tracking_components_'
                     'experiment-page_components_runs_cells_runnamecellrenderer.tsx_46"]')
POPUP = "[data-radix-popper-content-wrapper]"
ASSISTANT_CLOSE = '[data-component-id="mlflow.assistant.chat_panel.close"]'


def chromium_path() -> str | None:
    """Debian's Chromium binary, or None."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


def missing(reason: str):
    """Skip locally; fail under CI, which installs the browser and playwright."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must have it)")
    pytest.skip(reason)


def launch(playwright):
    """Headless Chromium; Playwright gives it a fresh temporary profile. The caller closes it."""
    return playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)


@pytest.fixture(scope="session")
def browser():
    if chromium_path() is None:
        missing("Chromium not found; `apt-get install chromium` (.ci/run installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed; pip install -e \".[test]\"")
    with sync_playwright() as p:
        b = launch(p)
        try:
            yield b
        finally:
            b.close()


def new_page(browser):
    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(UI_TIMEOUT_MS)
    return page


def open_runs(page, server: str, experiment_id: str) -> None:
    """The experiment's runs table in "Model training" mode, the assistant panel closed."""
    page.goto(f"{server}/#/experiments/{experiment_id}/runs?workflowType=machine_learning")
    page.get_by_text("matching runs").wait_for()
    close_assistant(page)


def close_assistant(page) -> None:
    """Close the MLflow Assistant panel when it is open (it takes a third of the page)."""
    close = page.locator(ASSISTANT_CLOSE)
    if close.count():
        close.click()


def expand_parent_runs(page) -> None:
    """Show the nested runs under every parent run (waits for the table to show one)."""
    page.locator(RUN_NAME_EXPANDER).first.wait_for()
    for button in page.locator(RUN_NAME_EXPANDER).all():
        button.click()


def toggle_columns(page, keys) -> None:
    """Show or hide columns of the runs table: attributes, params, tags (the "Columns" menu's boxes)."""
    page.get_by_role("button", name="Columns", exact=True).click()
    for key in keys:
        page.get_by_placeholder("Search columns").fill(key)
        page.locator(POPUP).get_by_text(key, exact=True).first.click()
    page.keyboard.press("Escape")


def select_all_runs(page) -> None:
    """Tick every run of the table (its toolbar then offers Compare)."""
    page.get_by_label("Select all runs").click()
    page.get_by_role("button", name="Compare", exact=True).wait_for()


def group_by(page, key: str) -> None:
    """Group the runs by a param or tag (the "Group by" menu's search, then the key)."""
    page.get_by_role("button", name="Group by", exact=True).click()
    page.get_by_placeholder("Search").fill(key)
    page.get_by_role("menuitemcheckbox", name=key, exact=True).first.click()
    page.keyboard.press("Escape")
    page.get_by_role("button", name=f"Group by: {key}").wait_for()


def chart_view(page, metric_filter: str | None = None) -> None:
    """Switch to the chart view; with metric_filter, only the charts whose name contains it."""
    page.locator("label:has(input[value=CHART])").click()
    if metric_filter:
        page.get_by_placeholder("Search metric charts").fill(metric_filter)


def chart_card(page, metric: str):
    """The chart card titled with the metric's name."""
    return page.locator("[data-testid='experiment-view-compare-runs-card']").filter(
        has=page.get_by_text(metric, exact=True)).first
