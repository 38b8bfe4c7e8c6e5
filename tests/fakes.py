"""Small stand-ins shared by the data tests."""


class RowRecorder:
    """A cube stand-in that records how many rows each read returns."""

    def __init__(self, array):
        self.array, self.shape, self.ndim, self.reads = array, array.shape, array.ndim, []

    def __getitem__(self, index):
        out = self.array[index]
        self.reads.append(out.shape[0])
        return out
