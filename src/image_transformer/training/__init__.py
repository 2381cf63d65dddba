"""Training: the config, the schedule, the processes, the run folder's guard, the loop and a whole run."""

from .config import TrainConfig
from .run import TrainingRun
from .trainer import Trainer

__all__ = ["TrainConfig", "Trainer", "TrainingRun"]
