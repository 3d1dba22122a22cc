"""`cocoop-hf recipes`: each shipped recipe summed up by the first sentence of its opening comment, whole (never cut
mid-sentence at the end of a comment line), wrapped to the terminal under the recipe's name."""

import pytest

from cocoop_hf_training import recipes
from cocoop_hf_training.recipes import opening_paragraph, shipped_recipes, summary_line


@pytest.mark.parametrize("name", sorted(shipped_recipes()))
def test_a_shipped_recipe_is_summed_up_by_a_whole_sentence(name):
    path = shipped_recipes()[name]
    summary = summary_line(path)
    assert summary.endswith("."), summary  # not "...(base-to-new, 16 shots):" nor "... with"
    assert opening_paragraph(path).startswith(summary)
    assert 40 <= len(summary) <= 400, summary


def test_the_summaries_of_two_recipes_whose_first_line_was_cut():
    recipe = shipped_recipes()
    assert summary_line(recipe["cocoop_vit_b16_c4_ep10_batch1_ctxv1"]).endswith(
        '(base-to-new, 16 shots): ViT-B/16, 4 context tokens from "a photo of a", batch 1, 10 epochs, SGD lr 0.002 '
        "(momentum 0.9, weight decay 5e-4), 1 constant warmup epoch at 1e-5 then cosine per epoch, fp16."
    )
    assert summary_line(recipe["demo_tiny_cifar10"]) == (
        "MACHINERY DEMO (offline, ~10 s on 2 CPU cores): the whole base-to-new protocol on 400 real CIFAR-10 images "
        "with a tiny CLIP whose weights are RANDOM (drawn from a fixed seed)."
    )
    # "et al." and a quoted prompt's "{}." do not end a sentence; an example command after the paragraph is not in it.
    assert summary_line(recipe["kgcoop_vit_b16_ep100_ctxv1"]).startswith("KgCoOp (Yao et al., CVPR 2023) base-to-new")
    assert summary_line(recipe["zeroshot_clip_vit_b16"]).endswith("equals CLIP exactly.")


def test_a_comment_paragraph_ends_at_a_blank_or_indented_comment_line(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("\n# Mine: one\n# paragraph, e.g. with\n#   cocoop-hf train mine\n# Not this.\nseed: 1\n")
    assert opening_paragraph(path) == "Mine: one paragraph, e.g. with"
    assert summary_line(path) == "Mine: one paragraph, e.g. with"
    path.write_text("seed: 1  # no opening comment\n")
    assert summary_line(path) == ""


def test_the_list_is_wrapped_to_the_terminal_without_losing_a_word(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    recipes.main([])
    lines = capsys.readouterr().out.splitlines()[1:]
    assert all(len(line) <= 80 for line in lines)
    shown, name = {}, None
    for line in lines:
        if line.startswith("      "):
            shown[name] = f"{shown.get(name, '')} {line.strip()}".strip()
        else:
            name = line.strip()
    assert shown == {name: summary_line(path) for name, path in shipped_recipes().items()}
