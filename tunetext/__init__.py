"""tunetext: from labelled text to a fine-tuned transformer classifier.

    import tunetext
    run = tunetext.train(tunetext.load_config(overrides={"data.source": "sms_spam"}), "runs/spam")
    tunetext.Classifier.load(run.run_dir).predict(["WINNER! Claim your prize now"])
"""

from tunetext.audit import audit
from tunetext.config import ConfigError, RunConfig, load_config
from tunetext.evaluate import evaluate
from tunetext.predict import Classifier, Prediction
from tunetext.train import Run, TrainingInterrupted, train
from tunetext.version import __version__

__all__ = ["Classifier", "ConfigError", "Prediction", "Run", "RunConfig", "TrainingInterrupted",
           "__version__", "audit", "evaluate", "load_config", "train"]
