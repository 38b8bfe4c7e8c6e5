"""Console logging for the stage scripts (models never log)."""

from __future__ import annotations

import logging
import sys


def get_logger(name: str = "sspq") -> logging.Logger:
    """A logger that prints `[name] message` to stderr once, whatever the number of calls."""
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[%(name)s] %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger
