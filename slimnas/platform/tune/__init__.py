"""Ray Tune adapters: the ask/tell searcher, the early-stop scheduler, and the runner of one search experiment."""

from .runner import TuneOutcome, run_tune
from .scheduler import EarlyStopScheduler
from .searcher import AskTellSearcher

__all__ = ["AskTellSearcher", "EarlyStopScheduler", "run_tune", "TuneOutcome"]
