"""salong's bundled model files (installed as the package `salong.checkpoints`; see salong/bundled.py)."""
