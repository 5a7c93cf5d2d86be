"""The memory a run needs, counted from the shapes of its arrays, and the memory the machine has.

`config.validate` compares the two before anything starts, so a size that cannot fit stops with
one line instead of a MemoryError or minutes of swapping. With P parameters (W1 (D, H), W2 (H,)
or (H, 3), the value head's H + 1), b bytes per value (the dtype), N envs, H hidden units and
episodes of at most `cap` agent steps (pgpong/engine/envs.py::episode_cap):

    model     P*b * (MODEL_COPIES + OPTIMIZER_COPIES): weights, batch gradient and the optimizer's
              memory (RMSProp: cache; Adam: m, v), plus, during an update, an episode's dense dW1,
              the new weights and optimizer memory beside the old, and numpy's temporaries
    episodes  the rollout ring (pgpong/engine/rollout.py) as it starts: RING_START rows, one per
              agent step, plus a copy of `min(cap, RING_START)` rows when every env ends an episode
              on the same step (a cap truncates them together); per row and env: hs H*b,
              d log pi (1 or 3)*b, P(UP) b, the reward 8 bytes and the input's sparse row
              (ROW_BYTES of bookkeeping, NONZEROS per input frame of 5 bytes each). Longer
              episodes double the ring (its rows grow to the longest episode in flight), so this
              is about the least a run needs: a size that does not fit even so is refused.
    frames    per env: the emulator's 210x160 frame twice (received, cropped), the dense input
              of D int8 and the two binarized frames kept
    emulators EMULATOR_BYTES per env
    process   PROCESS_BYTES: Python with numpy, Hydra and ale-py imported (MLflow adds ~180 MB)
"""
import os
from pathlib import Path

import numpy as np

from pgpong.core.policy import ACTIONS
from pgpong.core.preprocess import FRAME_HEIGHT, FRAME_WIDTH, frame_size, input_size
from pgpong.engine.envs import episode_cap

# The copies were measured as peak RSS of a run with H=5000 (W1 128 MB): 7.1 copies with RMSProp, 11 with Adam.
MODEL_COPIES = 6                   # weights x2, batch gradient, an episode's dW1, the update's temporaries
OPTIMIZER_COPIES = {"rmsprop": 1, "adam": 5}   # RMSProp's cache; Adam's m and v, new ones beside them, m_hat, v_hat
RING_START = 1024                  # Rollout's first ring capacity, in steps
ROW_BYTES = 48                     # per env and step: its entry in the step's Python list of row bounds
NONZEROS = 32                      # non-zero pixels per input frame; Pong with the gist's crop: 27-29 mean, 51 max
EMULATOR_BYTES = 1.6 * 2**20       # RSS per ALE emulator after reset (ale-py 0.12, vector or gymnasium)
PROCESS_BYTES = 80 * 2**20         # a tiny run's peak RSS: 76 MB (tracking=none) to 253 MB (MLflow)


def estimate(cfg) -> dict[str, int]:
    """Bytes a run of cfg needs at least, by part (model, episodes, frames, emulators, process)."""
    D, H, N, b = input_size(cfg.crop, cfg.input.kind), cfg.H, cfg.env.num_envs, np.dtype(cfg.dtype).itemsize
    outputs = len(ACTIONS[cfg.actions.kind])
    P = D * H + H * (1 if outputs == 2 else outputs) + ((H + 1) if cfg.baseline.kind == "value" else 0)
    rows = RING_START + min(episode_cap(cfg.env), RING_START)
    frames_per_input = 2 if cfg.input.kind == "stack" else 1
    per_row_env = H * b + (1 if outputs == 2 else outputs) * b + b + 8 + ROW_BYTES + 5 * NONZEROS * frames_per_input
    return {
        "model": P * b * (MODEL_COPIES + OPTIMIZER_COPIES[cfg.optim.name]),
        "episodes": rows * N * per_row_env,
        "frames": N * (2 * FRAME_HEIGHT * FRAME_WIDTH + D + 2 * frame_size(cfg.crop)),
        "emulators": int(N * EMULATOR_BYTES),
        "process": PROCESS_BYTES,
    }


def available() -> int | None:
    """Bytes this process may still use: the kernel's MemAvailable, within a cgroup's limit; None if unknown."""
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:                                            # cgroup v2: a container's own limit
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        pass
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None
    return max(0, min(found))


def human(n: int) -> str:
    """1.5 GB, 200 MB, ... (1 GB = 2**30 bytes); huge counts stay one short word."""
    for unit, size in (("TB", 2**40), ("GB", 2**30), ("MB", 2**20)):
        if n >= size:
            return f"{n / size:,.1f} {unit}" if n < 2**70 else f"over {2**70 // 2**40:,} TB"
    return f"{max(n, 0) / 2**20:.1f} MB"

