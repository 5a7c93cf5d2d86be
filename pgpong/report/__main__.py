"""python -m pgpong.report experiment=crop_fix    # see pgpong/report/build.py"""
from pgpong.report.build import main

main()
