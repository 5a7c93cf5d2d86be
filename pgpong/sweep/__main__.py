"""python -m pgpong.sweep sweep=lr_h n_trials=40    # see pgpong/sweep/study.py (workers=N: launch.py)"""
import sys

from pgpong.sweep import launch
from pgpong.sweep.study import main

sys.exit(launch.main(sys.argv[1:]) if launch.wanted(sys.argv[1:]) else main())
