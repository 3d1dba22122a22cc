"""Macro-F1 in percent over the classes present in the references, as Dassl's `Classification` evaluator
(`f1_score(y_true, y_pred, average="macro", labels=np.unique(y_true))`); a local `evaluate` module, no sklearn."""

import datasets
import evaluate


_DESCRIPTION = "Unweighted mean of per-class F1 (in percent) over the classes that occur in the references."
_KWARGS = """
Args:
    predictions (`list[int]`): predicted class indices.
    references (`list[int]`): true class indices.
Returns:
    macro_f1 (`float`): in percent.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class MacroF1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references):
        if len(references) == 0:
            raise ValueError("macro-F1 of an empty evaluation set is undefined: no references were given.")
        scores = []
        for label in sorted(set(references)):
            tp = sum(1 for p, r in zip(predictions, references, strict=True) if p == label and r == label)
            fp = sum(1 for p, r in zip(predictions, references, strict=True) if p == label and r != label)
            fn = sum(1 for p, r in zip(predictions, references, strict=True) if p != label and r == label)
            scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
        return {"macro_f1": 100.0 * sum(scores) / len(scores)}
