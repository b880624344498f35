"""rlcurate.curation: ingest, clean, verify, score (MMR1 VPS), build SFT/RL sets and publish."""

__version__ = "0.1.0"
