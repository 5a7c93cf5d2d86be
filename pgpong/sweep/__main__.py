"""python -m pgpong.sweep sweep=lr_h n_trials=40    # see pgpong/sweep/study.py"""
import sys

from pgpong.sweep.study import main

sys.exit(main())
