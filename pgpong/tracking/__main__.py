"""python -m pgpong.tracking replay outputs/<date>/<time>    # send writes a lost server missed"""
import sys

from pgpong.tracking.tracker import main

sys.exit(main())
