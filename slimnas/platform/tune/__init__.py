"""Ray Tune adapters: the ask/tell searcher, the early-stop scheduler, and the runner of one search experiment."""

from slimnas.platform.tune.runner import TuneOutcome, run_tune
from slimnas.platform.tune.scheduler import EarlyStopScheduler
from slimnas.platform.tune.searcher import AskTellSearcher

__all__ = ["AskTellSearcher", "EarlyStopScheduler", "run_tune", "TuneOutcome"]
