"""tunetext: from labelled text to a fine-tuned transformer classifier.

    import tunetext
    run = tunetext.train(tunetext.load_config(overrides={"data.source": "sms_spam"}), "runs/spam")
    tunetext.Classifier.load(run.run_dir).predict(["WINNER! Claim your prize now"])
"""

__version__ = "0.1.0"

from tunetext.config import ConfigError, RunConfig, load_config  # noqa: E402
from tunetext.evaluate import evaluate  # noqa: E402
from tunetext.predict import Classifier, Prediction  # noqa: E402
from tunetext.train import Run, TrainingInterrupted, train  # noqa: E402

__all__ = ["Classifier", "ConfigError", "Prediction", "Run", "RunConfig", "TrainingInterrupted",
           "__version__", "evaluate", "load_config", "train"]
