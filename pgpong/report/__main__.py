"""python -m pgpong.report experiment=crop_fix    # see pgpong/report/build.py"""
import sys

from pgpong import interrupt

interrupt.guard()     # before the slow imports below: a signal while they load is one line too

from pgpong.report.build import main  # noqa: E402

sys.exit(main())
