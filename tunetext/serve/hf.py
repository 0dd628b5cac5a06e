"""The Hugging Face inference convention for text classification, as `huggingface_hub.InferenceClient(url)
.text_classification(text)` speaks it: POST `{"inputs": text or [texts], "parameters": {"top_k": k,
"function_to_apply": f}}` to the server's base URL, answered with one list of `{"label", "score"}` per
input, most probable first: `[[{"label": ..., "score": ...}, ...]]` for one text.

The scores are the run's own (see docs/serving.md): a single-label run's calibrated softmax, a multi-label
run's sigmoid per label (thresholds are not applied: every label is listed with its probability), and a
regression run's value, as the one element `{"label": <target name>, "score": value}`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from tunetext.predict import Classifier, Prediction

# The function each task's scores come from, as `function_to_apply` names it. The server answers only
# with that one: the rows it has (and caches) are already probabilities or values, and the other
# functions would need the logits (softmax cannot be undone up to its constant).
FUNCTION = {"single_label": "softmax", "multi_label": "sigmoid", "regression": "none"}


class HFParameters(BaseModel):
    """`parameters` of the convention."""

    model_config = ConfigDict(extra="forbid")

    top_k: Annotated[int, Field(ge=1, strict=True)] | None = Field(
        None, description="Only the k most probable labels (default: every label).")
    function_to_apply: Literal["softmax", "sigmoid", "none"] | None = Field(
        None, description="Must be the run's own, if given: softmax (single-label), sigmoid (multi-label) "
        "or none (regression).")


class HFRequest(BaseModel):
    """The body `InferenceClient.text_classification` sends."""

    model_config = ConfigDict(extra="forbid")

    inputs: StrictStr | Annotated[list[StrictStr], Field(min_length=1)] = Field(
        description="A text, or a list of texts (one answer list each).")
    parameters: HFParameters | None = None


def function_problem(task: str, parameters: HFParameters | None) -> str | None:
    """Why `parameters.function_to_apply` cannot be honoured for a run of `task`; None: it can."""
    asked = parameters.function_to_apply if parameters else None
    if asked is None or asked == FUNCTION[task]:
        return None
    return (f"this run ({task.replace('_', '-')}) answers with {FUNCTION[task]}; function_to_apply="
            f"{asked!r} is not available: leave it out or send {FUNCTION[task]!r}")


def hf_answer(clf: Classifier, prediction: Prediction, top_k: int | None) -> list[dict[str, Any]]:
    """One text's answer in the convention: every label and its score, most probable first, the first
    `top_k` of them; for regression the one element named after the target."""
    if clf.task == "regression":
        return [{"label": clf.label_names[0], "score": prediction.value}][:top_k]
    probs = prediction.probabilities
    ranked = sorted(probs, key=lambda name: -probs[name])[:top_k]
    return [{"label": name, "score": probs[name]} for name in ranked]
