"""The vector path against the gist played one env at a time (tests/gist_reference.py).

Four envs in two groups of AtariVectorEnv (the default layout, smaller), sticky actions off,
episodes capped at CAP steps: some games end on their own before the cap and some are cut at
it, so the envs' episodes end at different steps. Replaying each env's actions in its own
gymnasium env, the gist's loop must see, env by env and step by step, the inputs pgpong
recorded (zero after every reset), its hidden states, P(UP), d log pi / d logit, rewards and
episode ends; and the trainer must learn from exactly the gist's episode gradients. A bug that
swaps, shifts or mixes env rows or steps breaks one of these equalities.
"""
import numpy as np

from pgpong.core.preprocess import dense_input
from pgpong.engine import checkpoint
from pgpong.engine.envs import seeded_envs
from pgpong.engine.rollout import Rollout
from pgpong.engine.state import new_state, rollout_settings
from pgpong.engine.trainer import train
from pgpong.tracking.tracker import NullTracker
from tests import gist_reference
from tests.conftest import compose_cfg

CAP = 960      # steps: with seed 2, three games end on their own (920, 947, 948 steps), one is cut
STEPS = 1060   # every env finishes one episode and is 100-140 steps into its next
BASE = ["env.num_envs=4", "env.groups=2", "env.repeat_action_probability=0.0", f"env.max_episode_steps={CAP}",
        "H=8", "tracking=none", "seed=2"]


def replay(env_id, seeds, actions, W1, W2):
    """The gist's episodes of every env; actions[i]: env i's actions (2 = UP, 3 = DOWN) in order."""
    return [gist_reference.play(env_id, s, a, W1.T.astype(np.float64), W2.astype(np.float64), CAP)
            for s, a in zip(seeds, actions)]


def test_vector_rollout_records_each_envs_steps_as_the_gist_sees_them():
    cfg = compose_cfg(BASE + ["dtype=float64"])
    rng, envs = seeded_envs(cfg)
    params = new_state(cfg, rng).params
    seeds = [int(s) for g in envs.groups for s in g.seeds]
    rollouts = [Rollout(g.reset(), dtype=np.float64, **rollout_settings(cfg)) for g in envs.groups]
    firsts = np.cumsum([0] + [g.num_envs for g in envs.groups])
    ours = [[] for _ in seeds]                  # per env: its finished episodes, in order
    actions = []                                # per step: (envs,) actions sent
    try:
        for t in range(STEPS + 1):              # the phases of the trainer's loop, group after group
            sent = []
            for k, (g, ro) in enumerate(zip(envs.groups, rollouts)):
                if t > 0:
                    for i, ep in ro.record_step(*g.recv()):
                        ours[firsts[k] + i].append(ep)
                if t == STEPS:
                    continue
                a = ro.act(params, rng, version=0)
                g.send(a)
                ro.record_acts()
                sent.append(a)
            if sent:
                actions.append(np.concatenate(sent))
        for k, ro in enumerate(rollouts):       # each env's episode in flight: every step but the unsent one
            for i, ep in enumerate(ro.in_flight()):
                ours[firsts[k] + i].append(ep)
    finally:
        envs.close()
    ref = replay(cfg.env.id, seeds, np.asarray(actions).T, params["W1"], params["W2"])

    ends = [len(eps[0]) for eps in ref]
    assert len(set(ends)) > 1 and min(ends) < CAP and max(ends) == CAP   # games over and games cut, apart
    D = params["W1"].shape[0]
    for i, (mine, theirs) in enumerate(zip(ours, ref)):
        assert [len(e) for e in mine] == [len(e) for e in theirs], f"env {i}: episode lengths"
        assert [e.ended for e in theirs] == [True] * (len(theirs) - 1) + [False]
        for j, (a, b) in enumerate(zip(mine, theirs)):
            where = f"env {i}, episode {j}"
            X = np.vstack([dense_input(idx, val, D) for idx, val in zip(a.idx, a.val)])
            np.testing.assert_array_equal(X, np.vstack(b.xs), err_msg=f"{where}: inputs")
            assert not X[0].any(), f"{where}: the first input is zero"
            np.testing.assert_array_equal(a.rewards, b.rewards, err_msg=f"{where}: rewards")
            np.testing.assert_allclose(a.hs, np.vstack(b.hs), rtol=1e-12, atol=1e-15, err_msg=f"{where}: hidden")
            np.testing.assert_allclose(a.p_up, b.p_up, rtol=1e-12, err_msg=f"{where}: P(UP)")
            np.testing.assert_allclose(a.dlogps, b.dlogps, rtol=1e-10, atol=1e-15, err_msg=f"{where}: dlogp")
    assert any(np.any(e.rewards) for eps in ours for e in eps)


class EpisodeLog(NullTracker):
    def __init__(self):
        self.episodes = []

    def log_metrics(self, metrics, step):
        self.episodes.append((step, metrics["episode/length"], metrics["episode/reward"]))


class ActionLog:
    """The real vector envs, group by group, with the actions the trainer sent and the steps collected."""

    def __init__(self, envs):
        self.envs, self.num_envs = envs, envs.num_envs
        self.groups = [_LoggedGroup(g) for g in envs.groups]

    def actions(self) -> list:
        """Per env, the actions of the steps its group collected, in order."""
        return [a for g in self.groups for a in np.asarray(g.sent[:g.collected]).T]

    def close(self):
        self.envs.close()


class _LoggedGroup:
    def __init__(self, group):
        self.group, self.num_envs, self.seeds = group, group.num_envs, group.seeds
        self.sent, self.collected = [], 0

    def reset(self):
        return self.group.reset()

    def send(self, actions):
        self.sent.append(np.array(actions))
        self.group.send(actions)

    def recv(self):
        self.collected += 1
        return self.group.recv()

    def cancel(self):
        self.group.cancel()


def test_trainer_on_the_vector_path_learns_the_gists_episode_gradients(tmp_path):
    # no update (batch_size > episodes): every step is acted with the initial weights; a
    # checkpoint after every learned episode holds the batch gradient summed so far
    cfg = compose_cfg(BASE + ["episodes=4", "batch_size=10", "checkpoint_every=1", "checkpoint_keep=100"])
    rng, envs = seeded_envs(cfg)
    envs = ActionLog(envs)
    log = EpisodeLog()
    try:
        summary = train(cfg, envs, log, rng, tmp_path)
    finally:
        envs.close()
    seeds = [int(s) for g in envs.groups for s in g.seeds]
    ckpts = [checkpoint.load(p) for p in checkpoint.list_checkpoints(tmp_path / "checkpoints")]
    W1, W2 = ckpts[0][0]["param.W1"], ckpts[0][0]["param.W2"]
    ref = replay(cfg.env.id, seeds, envs.actions(), W1, W2)

    # the gist's finished episodes in the order they end (step, then env): the trainer's order
    done = sorted((sum(len(e) for e in eps[:j + 1]), i, ep) for i, eps in enumerate(ref)
                  for j, ep in enumerate(eps) if ep.ended)[:4]
    assert len({end for end, _, _ in done}) > 1                         # not all at the same step
    assert [(n, length, reward) for n, length, reward in log.episodes] == \
        [(n + 1, len(ep), float(sum(ep.rewards))) for n, (_, _, ep) in enumerate(done)]
    assert summary["rewards"] == [float(sum(ep.rewards)) for _, _, ep in done] and any(summary["rewards"])
    grads = [ep.gradient(W1.T.astype(np.float64), W2.astype(np.float64), cfg.gamma) for _, _, ep in done]
    assert [meta["episode"] for _, meta in ckpts] == sorted({meta["episode"] for _, meta in ckpts})
    for arrays, meta in ckpts:
        n = meta["episode"]
        dW1 = sum(g[0] for g in grads[:n]).T
        dW2 = sum(g[1] for g in grads[:n])
        np.testing.assert_allclose(arrays["grad.W1"], dW1, rtol=1e-4, atol=1e-4 * np.abs(dW1).max(),
                                   err_msg=f"W1 gradient after {n} episodes")
        np.testing.assert_allclose(arrays["grad.W2"], dW2, rtol=1e-4, atol=1e-4 * np.abs(dW2).max(),
                                   err_msg=f"W2 gradient after {n} episodes")
        np.testing.assert_array_equal(arrays["param.W1"], W1)          # acted and learned with one set of weights
    assert ckpts[-1][1]["episode"] == 4 and summary["updates"] == 0
