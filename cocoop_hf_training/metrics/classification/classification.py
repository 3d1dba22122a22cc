"""Top-1 accuracy and macro-F1 in percent, as Dassl's `Classification` evaluator (macro-F1 is sklearn's
`f1_score(y_true, y_pred, average="macro", labels=np.unique(y_true))`); a local `evaluate` module: works offline,
no sklearn."""

import datasets
import evaluate


_DESCRIPTION = (
    "Top-1 accuracy, 100 * correct / references, and macro-F1, the unweighted mean of per-class F1 (in percent) over "
    "the classes that occur in the references."
)
_KWARGS = """
Args:
    predictions (`list[int]`): predicted class indices.
    references (`list[int]`): true class indices.
Returns:
    accuracy (`float`): in percent.
    macro_f1 (`float`): in percent.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Classification(evaluate.Metric):
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
            raise ValueError("accuracy and macro-F1 of an empty evaluation set are undefined: no references given.")
        pairs = list(zip(predictions, references, strict=True))
        scores = []
        for label in sorted(set(references)):
            tp = sum(1 for p, r in pairs if p == label and r == label)
            fp = sum(1 for p, r in pairs if p == label and r != label)
            fn = sum(1 for p, r in pairs if p != label and r == label)
            scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
        return {
            "accuracy": 100.0 * sum(int(p == r) for p, r in pairs) / len(references),
            "macro_f1": 100.0 * sum(scores) / len(scores),
        }
