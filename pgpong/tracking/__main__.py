"""python -m pgpong.tracking replay outputs/<date>/<time>    # send writes a lost server missed"""
import sys

from pgpong import interrupt

interrupt.guard()     # before the slow imports below: a signal while they load is one line too

from pgpong.tracking.tracker import main  # noqa: E402

sys.exit(main())
