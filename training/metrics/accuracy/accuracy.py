"""Top-1 accuracy in percent, as Dassl's `Classification` evaluator; a local `evaluate` module (works offline)."""

import datasets
import evaluate


_DESCRIPTION = "Top-1 accuracy in percent: 100 * (number of correct predictions) / (number of references)."
_KWARGS = """
Args:
    predictions (`list[int]`): predicted class indices.
    references (`list[int]`): true class indices.
Returns:
    accuracy (`float`): in percent.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Accuracy(evaluate.Metric):
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
            raise ValueError("accuracy of an empty evaluation set is undefined: no references were given.")
        correct = sum(int(p == r) for p, r in zip(predictions, references, strict=True))
        return {"accuracy": 100.0 * correct / len(references)}
