"""python -m pgpong.sweep sweep=lr_h n_trials=40    # see pgpong/sweep/study.py (workers=N: launch.py)"""
import sys

from pgpong import interrupt

interrupt.guard()     # before the slow imports below: a signal while they load is one line too

from pgpong.sweep import launch  # noqa: E402
from pgpong.sweep.study import main  # noqa: E402

sys.exit(launch.main(sys.argv[1:]) if launch.wanted(sys.argv[1:]) else main())
