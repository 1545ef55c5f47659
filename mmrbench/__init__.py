"""mmrbench: benchmark harness, leaderboard and reference trainer for MMR-AD."""

__version__ = "0.1.0"
PROTOCOL = "mmr-ad-v1"
