"""Never finishes building: a busy loop in __init__."""

from common import TinyCNN


class Net(TinyCNN):
    def __init__(self):
        super().__init__()
        while True:
            pass
