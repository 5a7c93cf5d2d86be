"""python -m pgpong.report experiment=crop_fix    # see pgpong/report/build.py"""
import sys

from pgpong.report.build import main

sys.exit(main())
