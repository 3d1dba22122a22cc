"""
Which classes share one text-tower call: grouping by prompt length, chunking, and the fixed-shape buckets of a
compiled text path. Pure functions of the prompt lengths; no model state.

This file travels with the code of every saved folder (the modeling file imports it), so it may import only torch,
transformers and its sibling files.
"""

import math

import torch


def class_groups(
    lengths: list[int],
    batch: int,
    prefix_len: int,
    chunk_tokens: int,
    bucket_by_length: bool,
    device,
    length_buckets=None,
    max_length: int | None = None,
) -> list[tuple[torch.Tensor, int, int]]:
    """
    `(class indices, padded length, count of real classes)` per text-tower call. `lengths`: the tokens each class's
    call must run after a shared part of `prefix_len` tokens (the prefix cache's suffix, or the whole prompt with
    `prefix_len=0`). Classes are grouped by length (`bucket_by_length`): lengths are merged where padding a few
    classes costs less than one more call (a dynamic programme over the sorted lengths); each group is chunked to
    `chunk_tokens` tokens per call (`batch` prompts per class). With `length_buckets` (see
    `CausalPromptEncoder.compile`), lengths go to fixed buckets (capped at `max_length`) and each bucket's last chunk
    repeats its last class up to a power of two; only the first `count` classes of a chunk are real.
    """
    by_length = {}
    for index, length in enumerate(lengths):
        by_length.setdefault(length, []).append(index)
    if length_buckets is not None:
        return _fixed_shape_groups(by_length, batch, prefix_len, chunk_tokens, length_buckets, max_length, device)
    sorted_lengths = sorted(by_length)
    if bucket_by_length:
        groups = _merged_lengths(by_length, sorted_lengths, batch, torch.device(device).type == "cuda")
    else:
        groups = [(list(range(len(lengths))), sorted_lengths[-1])]
    chunked = []
    for indices, length in groups:
        per_call = max(1, chunk_tokens // (batch * (prefix_len + length)))
        for start in range(0, len(indices), per_call):
            chunk = torch.tensor(indices[start : start + per_call], device=device)
            chunked.append((chunk, length, len(chunk)))
    return chunked


def _merged_lengths(by_length: dict, lengths: list[int], batch: int, on_cuda: bool) -> list[tuple[list[int], int]]:
    """The cheapest grouping of the sorted `lengths` into contiguous runs, each padded to its longest."""
    # Price of one more text-tower call in prompt tokens: kernel launches dominate small calls on a GPU.
    call_cost = 4096 if on_cuda else 64
    best = [0.0] + [math.inf] * len(lengths)  # best[j]: cheapest grouping of lengths[:j]
    cut = [0] * (len(lengths) + 1)
    for j in range(1, len(lengths) + 1):
        count = 0
        for i in range(j, 0, -1):  # group lengths[i-1 : j], padded to lengths[j-1]
            count += len(by_length[lengths[i - 1]])
            cost = best[i - 1] + batch * count * lengths[j - 1] + call_cost
            if cost < best[j]:
                best[j], cut[j] = cost, i - 1
    bounds, j = [], len(lengths)
    while j > 0:
        bounds.append((cut[j], j))
        j = cut[j]
    return [
        ([index for length in lengths[i:j] for index in by_length[length]], lengths[j - 1])
        for i, j in reversed(bounds)
    ]


def _fixed_shape_groups(by_length: dict, batch: int, prefix_len: int, chunk_tokens: int, buckets, max_length, device):
    """`class_groups` for a compiled text path: few distinct (classes, length) shapes per batch size."""
    by_bucket = {}
    for length in sorted(by_length):
        bucket = min([b for b in buckets if b >= length] or [max_length])
        by_bucket.setdefault(min(max(bucket, length), max_length), []).extend(by_length[length])
    chunked = []
    for length, indices in by_bucket.items():
        per_call = max(1, chunk_tokens // (batch * (prefix_len + length)))
        for start in range(0, len(indices), per_call):
            real = indices[start : start + per_call]
            size = min(per_call, 1 << (len(real) - 1).bit_length())  # full chunks, or a power of two
            chunk = torch.tensor(real + real[-1:] * (size - len(real)), device=device)
            chunked.append((chunk, length, len(real)))
    return chunked


def checked_length_buckets(length_buckets) -> tuple[int, ...] | None:
    """`compile_text_path`'s `length_buckets`, sorted and deduplicated; None stays None."""
    if length_buckets is None:
        return None
    buckets = tuple(sorted(set(length_buckets))) if not isinstance(length_buckets, (str, bytes)) else ()
    if not buckets or any(isinstance(b, bool) or not isinstance(b, int) or b < 2 for b in buckets):
        raise ValueError(
            f"`length_buckets` must be suffix lengths in tokens, integers >= 2 (a name token and EOS), e.g. "
            f"(8, 16, 32); got {length_buckets!r}."
        )
    return buckets
