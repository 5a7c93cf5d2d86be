"""pgpong: a research harness for Karpathy's Pong-from-pixels policy-gradient agent.

    python -m pgpong.run                 # train with the gist's defaults, tracked in MLflow
"""
__version__ = "0.1.0"
