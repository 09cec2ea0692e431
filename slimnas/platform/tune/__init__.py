"""Ray Tune adapters: the ask/tell searcher, the searcher that runs several search runs in one experiment, the
early-stop scheduler, the runner, and the evaluator actors that thin trials call (:mod:`.evaluators`)."""

from slimnas.platform.tune.evaluators import EvaluatorPool
from slimnas.platform.tune.multiplex import MultiplexSearcher, TuneOutcome, TuneRun
from slimnas.platform.tune.runner import PhasesOutcome, run_phases, run_tune
from slimnas.platform.tune.scheduler import EarlyStopScheduler
from slimnas.platform.tune.searcher import AskTellSearcher

__all__ = ["AskTellSearcher", "EarlyStopScheduler", "EvaluatorPool", "MultiplexSearcher", "PhasesOutcome",
           "TuneOutcome", "TuneRun", "run_phases", "run_tune"]
