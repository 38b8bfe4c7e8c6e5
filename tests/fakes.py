"""Small stand-ins shared by the data tests."""

import contextlib
import logging

from utils.logging import get_logger


class RowRecorder:
    """A cube stand-in that records how many rows each read returns."""

    def __init__(self, array):
        self.array, self.shape, self.ndim, self.reads = array, array.shape, array.ndim, []

    def __getitem__(self, index):
        out = self.array[index]
        self.reads.append(out.shape[0])
        return out


class LogRecords(logging.Handler):
    """Collects what the project logger logs (it does not propagate, so pytest's caplog would miss it)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)

    def warnings(self) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno == logging.WARNING]

    @classmethod
    @contextlib.contextmanager
    def attached(cls):
        handler = cls()
        logger = get_logger()
        logger.addHandler(handler)
        try:
            yield handler
        finally:
            logger.removeHandler(handler)
