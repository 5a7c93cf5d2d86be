"""Playing a freshly trained tiny model: from its MLflow run or its file, with video, headless."""
import re

import imageio.v2 as imageio
import numpy as np
import pytest

from pgpong import play
from pgpong.engine import checkpoint
from pgpong.errors import PgpongError
from tests.conftest import TINY, TINY_STEPS, assert_learned, compose_cfg, run_cli

STEPS = TINY_STEPS    # TINY's env.max_episode_steps: every played episode is cut there


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real training run (tiny budget, crop=fix) tracked in a SQLite store under tmp."""
    root = tmp_path_factory.mktemp("play")
    proc = run_cli([*TINY, "crop=fix"], cwd=root)
    assert proc.returncode == 0, proc.stderr
    run_id = re.search(r"MLflow run ([0-9a-f]{32})", proc.stderr).group(1)
    model = next(root.glob("outputs/*/*/model.npz"))
    assert_learned(checkpoint.load(model)[0], compose_cfg([*TINY, "crop=fix"]))   # a model that learned something
    return {"root": root, "run_id": run_id, "model": model}


def frames_and_size(path):
    reader = imageio.get_reader(path)
    try:
        n = reader.count_frames() if path.suffix == ".mp4" else sum(1 for _ in reader)
        return n, reader.get_data(0).shape
    finally:
        reader.close()


def test_play_from_a_run_prints_results_and_logs_the_video_to_the_run(trained):
    proc = run_cli([f"run_id={trained['run_id']}", "episodes=2", "video=true"], cwd=trained["root"],
                   module="pgpong.play", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"episodes 2  win rate \d+\.\d% \(\d/2\)  mean score [+-]\d+\.\d\d ± \d+\.\d\d  "
                     r"points won \d+  lost \d+", proc.stdout), proc.stdout
    assert "crop rows 35..184" in proc.stderr             # the training run's own crop (crop=fix)
    videos = list((trained["root"] / "videos").glob("run-*.mp4"))
    assert len(videos) == 1
    n, shape = frames_and_size(videos[0])
    assert n == STEPS + 1                                 # the reset frame and one per agent step
    assert shape == (*play.VIDEO_SHAPE, 3) == (448, 320, 3)
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=f"sqlite:///{trained['root'] / 'mlflow.db'}")
    assert [a.path for a in client.list_artifacts(trained["run_id"], "videos")] == [f"videos/{videos[0].name}"]
    history = client.get_metric_history(trained["run_id"], "eval/stochastic/episodes")
    assert [(m.value, m.step) for m in history] == [(2.0, 2)]   # on the training episode axis


def test_a_run_still_training_plays_its_latest_model_from_its_output_dir(trained):
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=f"sqlite:///{trained['root'] / 'mlflow.db'}")
    original = client.get_run(trained["run_id"])
    running = client.create_run(original.info.experiment_id, tags={"output_dir": str(trained["model"].parent)})
    res = play.run([f"run_id={running.info.run_id}", "episodes=1", "policy=greedy"], launch_dir=trained["root"])
    assert len(res.scores) == 1
    empty = client.create_run(original.info.experiment_id, tags={"output_dir": str(trained["root"] / "nowhere")})
    with pytest.raises(PgpongError, match="no model.npz artifact"):
        play.run([f"run_id={empty.info.run_id}"], launch_dir=trained["root"])


def test_greedy_play_from_a_model_file_is_repeatable_and_counts_points(trained):
    args = [f"model={trained['model']}", "episodes=2", "policy=greedy", "env.max_episode_steps=300"]
    a = play.run(args, launch_dir=trained["root"])
    b = play.run(args, launch_dir=trained["root"])
    assert a.scores == b.scores and a.won == b.won
    assert sum(a.won) + sum(a.lost) > 0                   # 300 steps is long enough for points to be scored
    assert a.scores == [w - l for w, l in zip(a.won, a.lost)]
    assert a.cut == 2 and a.video is None


def test_stochastic_play_depends_on_the_seed_only(trained):
    args = [f"model={trained['model']}", "episodes=1", "env.max_episode_steps=300"]
    runs = [play.run(args + [f"seed={s}"], launch_dir=trained["root"]) for s in (1, 1)]
    assert runs[0].scores == runs[1].scores and runs[0].won == runs[1].won


def test_gif_video_has_the_video_size_and_about_one_frame_per_step(trained, tmp_path):
    res = play.run([f"model={trained['model']}", "episodes=1", f"video={tmp_path / 'game.gif'}"],
                   launch_dir=trained["root"])
    assert res.video == tmp_path / "game.gif" and res.video_frames == STEPS + 1
    from PIL import Image, ImageSequence
    with Image.open(res.video) as gif:
        assert gif.size == play.VIDEO_SHAPE[::-1]
        frames = sum(1 for _ in ImageSequence.Iterator(gif))
    # GIF writers merge identical consecutive frames (the MP4 test checks the exact count)
    assert 0.9 * (STEPS + 1) <= frames <= STEPS + 1
    assert [p.name for p in tmp_path.iterdir()] == ["game.gif"]   # no temporary file left


def test_caption_frames_keep_the_screen_and_name_the_agents_paddle():
    frame = np.random.default_rng(0).integers(0, 255, (210, 160, 3), dtype=np.uint8)
    out = play.caption(frame, "agent: RIGHT (green) paddle | greedy")
    assert out.shape == (448, 320, 3)
    assert np.array_equal(out[play.BANNER::2, ::2], frame)
    assert out[:play.BANNER].max() == 255                 # the caption is drawn


def test_render_human_without_a_display_says_so(trained, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(play.sys, "platform", "linux")
    with pytest.raises(PgpongError, match="render=human: no display here"):
        play.run([f"model={trained['model']}", "render=human"], launch_dir=trained["root"])


@pytest.mark.parametrize("args, message", [
    ([], "give one of run_id="),
    (["model=missing.npz"], "no such model/checkpoint file"),
    (["run_id=0123456789abcdef0123456789abcdef"], "no such run"),
    (["MODEL", "policy=random"], "policy=random: must be stochastic or greedy"),
    (["MODEL", "episodes=0"], "episodes=0: must be >= 1"),
    (["MODEL", "video=clip.avi"], "video=clip.avi: use true, false, or a path ending in .mp4 or .gif"),
])
def test_play_refuses_bad_arguments_with_one_line(trained, args, message):
    args = [f"model={trained['model']}" if a == "MODEL" else a for a in args]
    with pytest.raises(PgpongError) as e:
        play.run(args, launch_dir=trained["root"])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_play_command_exits_2_with_one_line_when_there_is_no_model(trained):
    proc = run_cli(["model=nope.npz"], cwd=trained["root"], module="pgpong.play", timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in proc.stderr
