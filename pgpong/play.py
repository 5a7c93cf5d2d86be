"""Play a trained agent: win rate, score, points; optionally a video of one game or a window.

    python -m pgpong.play run_id=<MLflow run id> episodes=20            # the run's model.npz artifact
    python -m pgpong.play model=outputs/2026-01-01/12-00-00/model.npz   # or a model file
    python -m pgpong.play run_id=<id> policy=greedy                     # UP when P(UP) > 0.5 (default: sample, as trained)
    python -m pgpong.play run_id=<id> episodes=1 video=true             # MP4 of the first game, headless
    python -m pgpong.play model=m.npz video=videos/game.gif             # or a GIF (or .mp4) at a path of your choice
    python -m pgpong.play run_id=<id> render=human                      # a window (needs a display)
    options: seed=0, env.max_episode_steps=N (default: the training run's), fps=N, tracking.uri=sqlite:///mlflow.db

The agent is the right (green) paddle. It plays with the training run's own preprocessing,
input kind, actions and environment (all read from the config saved in the model file).
With run_id, the video and the eval/<policy>/* metrics are logged to that MLflow run.
"""
if __name__ == "__main__":     # before the slow imports below: a signal while they load is one line too
    from pgpong import interrupt
    interrupt.guard()

import contextlib
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from pgpong import cliargs, config
from pgpong.core import policy
from pgpong.core.preprocess import binarize, sparse_input
from pgpong.engine import checkpoint
from pgpong.engine.envs import make_one
from pgpong.engine.state import check_kind, check_model
from pgpong.errors import PgpongError, entry_point
from pgpong.files import atomic_path
from pgpong.paths import resolve_path, resolve_sqlite_uri
from pgpong.tracking import store

KEYS = ("run_id", "model", "episodes", "policy", "video", "render", "seed", "env.max_episode_steps", "fps",
        "tracking.uri")
SCALE, BANNER = 2, 28                 # video frames: 2x the 210x160 screen, a 28-pixel caption on top
VIDEO_SHAPE = (210 * SCALE + BANNER, 160 * SCALE)   # (height, width): 448 x 320, both multiples of 16


@dataclass
class Model:
    params: dict      # W1 (D, H), W2 (H,) or (H, 3)
    cfg: object       # the training config (OmegaConf)
    episode: int      # training episodes behind these weights
    source: str       # run id or path, for messages


@dataclass
class PlayResult:
    scores: list = field(default_factory=list)    # per episode: points won - points lost
    won: list = field(default_factory=list)       # per episode: points won
    lost: list = field(default_factory=list)      # per episode: points lost
    cut: int = 0                                  # episodes truncated before either side reached 21
    video: Path | None = None
    video_frames: int = 0

    @property
    def wins(self) -> int:
        return sum(w > l for w, l in zip(self.won, self.lost))

    @property
    def win_rate(self) -> float:
        return self.wins / max(len(self.scores), 1)

    def summary(self) -> str:
        n = len(self.scores)
        sd = float(np.std(self.scores, ddof=1)) if n > 1 else 0.0
        line = (f"episodes {n}  win rate {self.win_rate:.1%} ({self.wins}/{n})  mean score "
                f"{np.mean(self.scores):+.2f} ± {sd:.2f}  points won {sum(self.won)}  lost {sum(self.lost)}")
        if self.cut:
            line += f"  ({self.cut} cut by env.max_episode_steps before 21; a win there means leading)"
        return line


# ---------------------------------------------------------------- the model

def model_from_file(path: Path, source: str) -> Model:
    """The model in a file, every field checked before use: its config against the schema and
    `config.validate` (env ids: ALE games only, nothing imported), its weights against that config."""
    arrays, meta = checkpoint.load(path)
    check_kind(meta, "model", source)
    cfg = config.validate_saved(meta.get("config"), source)
    check_model(cfg, arrays, meta, source)
    return Model({k: arrays[k] for k in ("W1", "W2")}, cfg, meta["episode"], source)


def model_from_run(run_id: str, uri: str, launch_dir: Path, tmp: Path) -> tuple[Model, object]:
    """The model.npz artifact of an MLflow run (and the client, to log back to the run)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow.exceptions import MlflowException
    client = store.open_client(resolve_sqlite_uri(uri, launch_dir, "tracking.uri"), must_exist=True,
                               writes=False)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise PgpongError(f"run_id={run_id}: no such run in {client.tracking_uri}") from None
    try:
        path = client.download_artifacts(run_id, "model.npz", str(tmp))
        return model_from_file(Path(path), f"run {run_id}"), client
    except (MlflowException, OSError):
        pass
    # the artifact is logged when training ends; a running (or killed) run has its latest model in its output dir
    local = Path(run.data.tags.get("output_dir", "/nonexistent")) / "model.npz"
    if local.is_file():
        return model_from_file(local, f"run {run_id} ({run.info.status}; latest {local})"), client
    raise PgpongError(f"run_id={run_id}: the run has no model.npz artifact (logged when training ends) and its "
                      "output_dir holds none; pass model=<path to model.npz> instead")


# ---------------------------------------------------------------- playing (the training's own functions)

def act(model: Model, cur: np.ndarray, prev, greedy: bool, rng: np.random.Generator) -> int:
    """The env action the policy picks for one preprocessed frame pair."""
    idx, val = sparse_input(cur, prev, model.cfg.input.kind)
    p = policy.probs(model.params["W2"], policy.hidden(model.params["W1"], idx, val))
    if greedy:
        a = (0 if p > 0.5 else 1) if p.ndim == 0 else int(np.argmax(p))
    else:
        a = policy.sample(rng, p)
    return policy.ACTIONS[model.cfg.actions.kind][a]


def caption(frame: np.ndarray, text: str) -> np.ndarray:
    """The frame scaled up with a caption bar on top: (448, 320, 3) uint8 (the score is on the screen)."""
    from PIL import Image, ImageDraw, ImageFont
    big = np.repeat(np.repeat(frame, SCALE, axis=0), SCALE, axis=1)
    out = np.zeros((*VIDEO_SHAPE, 3), np.uint8)
    out[BANNER:] = big
    img = Image.fromarray(out)
    try:
        font = ImageFont.load_default(size=12)
    except (TypeError, OSError):
        font = ImageFont.load_default()
    ImageDraw.Draw(img).text((6, 6), text, fill=(255, 255, 255), font=font)
    return np.asarray(img)


def frames_per_s(env) -> float:
    """Real-time playback: 60 emulator frames per second over the agent's frameskip."""
    skip = env.spec.kwargs.get("frameskip", 4)
    mean_skip = (skip[0] + skip[1] - 1) / 2 if isinstance(skip, (tuple, list)) else skip   # v0: random in [lo, hi)
    return 60.0 / mean_skip


def play(model: Model, episodes: int, greedy: bool, seed: int, env_cfg, render_mode: str | None = None,
         video_path: Path | None = None, fps: float | None = None, log=None) -> PlayResult:
    """Play `episodes` games; record the first one to video_path if given."""
    rng = np.random.default_rng(seed)
    env = make_one(env_cfg, render_mode=render_mode)
    res = PlayResult()
    writer = None
    with contextlib.ExitStack() as video:   # closed after the first game: the video replaces video_path
        try:
            if video_path is not None:
                import imageio.v2 as imageio
                tmp_video = video.enter_context(atomic_path(video_path, suffix=video_path.suffix))
                kw = {"codec": "libx264", "quality": 7, "macro_block_size": 16} if video_path.suffix == ".mp4" else {"loop": 0}
                rate = fps or frames_per_s(env)
                writer = imageio.get_writer(tmp_video, fps=rate, **kw) if video_path.suffix == ".mp4" else \
                    imageio.get_writer(tmp_video, duration=1000.0 / rate, **kw)
            for ep in range(episodes):
                frame, _ = env.reset(seed=seed) if ep == 0 else env.reset()
                cur, prev = binarize(frame, model.cfg.crop), None
                won = lost = 0
                recording = writer is not None and ep == 0
                label = f"agent: RIGHT (green) paddle | {'greedy' if greedy else 'stochastic'}"
                if recording:
                    writer.append_data(caption(frame, label))
                    res.video_frames += 1
                while True:
                    frame, reward, terminated, truncated, _ = env.step(act(model, cur, prev, greedy, rng))
                    won += reward > 0
                    lost += reward < 0
                    prev, cur = cur, binarize(frame, model.cfg.crop)
                    if recording:
                        writer.append_data(caption(frame, label))
                        res.video_frames += 1
                    if terminated or truncated:
                        break
                res.won.append(int(won))
                res.lost.append(int(lost))
                res.scores.append(int(won) - int(lost))
                res.cut += bool(truncated and not terminated)
                if log:
                    log(f"episode {ep + 1}/{episodes}: agent {won} : {lost} cpu "
                        f"({'won' if won > lost else 'lost' if lost > won else 'tied'}{', cut' if truncated and not terminated else ''})")
                if recording:
                    writer.close()
                    writer = None
                    video.close()
                    res.video = video_path
        finally:
            if writer is not None:
                writer.close()
            env.close()
    return res


# ---------------------------------------------------------------- the command

def check_display(render: str) -> str | None:
    if render in ("none", ""):
        return None
    if render != "human":
        raise PgpongError(f"render={render}: must be human or none")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise PgpongError("render=human: no display here (DISPLAY is not set, e.g. a headless server); "
                          "record the game instead with video=true")
    return "human"


def run(argv: list[str], launch_dir: Path | None = None) -> PlayResult:
    args = cliargs.parse(argv, KEYS, usage=__doc__)
    launch_dir = Path(launch_dir or os.getcwd())
    episodes = cliargs.as_int("episodes", args.get("episodes", 10), minimum=1)
    seed = cliargs.as_int("seed", args.get("seed", 0), minimum=0)
    mode = args.get("policy", "stochastic")
    if mode not in ("stochastic", "greedy"):
        raise PgpongError(f"policy={mode}: must be stochastic or greedy")
    render_mode = check_display(args.get("render", "none"))
    if ("run_id" in args) == ("model" in args):
        raise PgpongError("give one of run_id=<MLflow run id> or model=<path to model.npz>")
    fps = float(args["fps"]) if "fps" in args else None

    with tempfile.TemporaryDirectory(prefix="pgpong-play-") as tmp:
        client = None
        if "run_id" in args:
            model, client = model_from_run(args["run_id"], args.get("tracking.uri", "sqlite:///mlflow.db"),
                                           launch_dir, Path(tmp))
        else:
            path = resolve_path(args["model"], launch_dir)
            model = model_from_file(path, str(path))

        env_cfg = OmegaConf.create(OmegaConf.to_container(model.cfg.env))
        if "env.max_episode_steps" in args:
            v = args["env.max_episode_steps"]
            env_cfg.max_episode_steps = None if v in ("null", "None") else cliargs.as_int("env.max_episode_steps", v, 1)

        video_path = None
        video = args.get("video", "false")
        if video.lower().endswith((".mp4", ".gif")):
            video_path = resolve_path(video, launch_dir)
        elif "." in video or "/" in video:
            raise PgpongError(f"video={video}: use true, false, or a path ending in .mp4 or .gif")
        elif cliargs.as_bool("video", video):
            stem = f"run-{args['run_id'][:8]}" if "run_id" in args else Path(args["model"]).stem
            video_path = launch_dir / "videos" / f"{stem}-{mode}-seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}.mp4"

        crop = model.cfg.crop
        print(f"pgpong play: {model.source} (trained {model.episode:,} episodes; {env_cfg.id}, crop rows "
              f"{crop.top}..{crop.bottom - 1}, input {model.cfg.input.kind}), policy={mode}, {episodes} episodes",
              file=sys.stderr)
        res = play(model, episodes, mode == "greedy", seed, env_cfg, render_mode, video_path, fps,
                   log=lambda s: print(s, file=sys.stderr))

        if client is not None:
            from mlflow.entities import Metric
            now, step = int(time.time() * 1000), model.episode
            try:
                with store.faults(client.tracking_uri):
                    client.log_batch(args["run_id"], metrics=[
                        Metric(f"eval/{mode}/{k}", float(v), now, step) for k, v in
                        (("win_rate", res.win_rate), ("mean_score", np.mean(res.scores)), ("points_won", sum(res.won)),
                         ("points_lost", sum(res.lost)), ("episodes", len(res.scores)))])
                    if res.video is not None:
                        client.log_artifact(args["run_id"], str(res.video), "videos")
            except PgpongError as e:
                raise PgpongError(f"{e}; {len(res.scores)} games played (win rate {res.win_rate:.1%}) "
                                  f"but not logged to run {args['run_id']}") from None
    return res


@entry_point
def main(argv: list[str] | None = None) -> int:
    res = run(sys.argv[1:] if argv is None else argv)
    print(res.summary())
    if res.video is not None:
        h, w = VIDEO_SHAPE
        print(f"video: {res.video} ({res.video_frames} frames, {w}x{h}; the agent is the right, green paddle)")
    return 0

if __name__ == "__main__":
    sys.exit(main())
