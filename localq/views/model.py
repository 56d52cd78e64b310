"""A model's facts from its GGUF header: what ``localq show`` prints and the app's info dialog shows.

``model_facts`` gives the (label, value) rows, ``quant_mix_rows`` the quant mix
table, ``model_notes`` the notes under it (weight rows K-quants cannot pack,
the start of the chat template). The CLI prints them with Rich, the app puts
them in its dialog: the same facts in the same words.
"""

from __future__ import annotations

from localq.units import count, size
from localq.views.paths import tilde

TEMPLATE_SHOWN = 300  # characters of the chat template shown; the rest is counted


def _known(value) -> str:
    return "?" if value is None else str(value)


def model_facts(info, variant=None) -> list[tuple[str, str]]:
    """(label, value) rows about a GGUF file and, if given, the installed variant; empty values left out."""
    rows = []
    if variant is not None:
        rows.append(("model", variant.ref))
        rows.append(("from", tilde(variant.source or variant.provenance.get("tool", "?"))))
        rows.append(("sha256", variant.files[0].sha256 if variant.files else "?"))
    rope = None
    if info.rope_freq_base is not None:
        rope = f"freq base {info.rope_freq_base:g}"
        if info.rope_scaling_type:
            rope += f", scaling {info.rope_scaling_type} x{info.rope_scaling_factor or 1:g}"
    rows += [
        ("file", tilde(str(info.path))),
        ("size", f"{size(info.size_bytes)} (GGUF v{info.gguf_version})"),
        ("name", _known(info.name)),
        ("architecture", _known(info.architecture)),
        ("parameters", f"{count(info.parameter_count)} ({info.parameter_count:,})"),
        ("file type", f"{_known(info.file_type)}, {info.bits_per_weight:.2f} bits per weight"),
        ("context length", _known(info.context_length)),
        ("layers", _known(info.block_count)),
        ("embedding", _known(info.embedding_length)),
        ("feed forward", _known(info.feed_forward_length)),
        ("attention heads", f"{_known(info.head_count)} (KV {_known(info.head_count_kv)})"),
        ("experts", info.expert_count and f"{info.expert_count} ({info.expert_used_count} used)"),
        ("vocabulary", _known(info.vocab_size)),
        ("rope", rope),
        ("tokenizer", f"{_known(info.tokenizer_model)} (BOS {_known(info.bos_token_id)}, "
                      f"EOS {_known(info.eos_token_id)})"),
        ("tensors", str(info.tensor_count)),
    ]
    return [(label, value) for label, value in rows if value]


QUANT_MIX_COLUMNS = ("type", "tensors", "parameters", "size", "share")


def quant_mix_rows(info) -> list[tuple[str, str, str, str, str]]:
    """One row per tensor type: type, tensors, parameters, bytes, share of the tensor data."""
    rows = []
    for type_name, part in info.quant_mix.items():
        share = part["bytes"] / info.tensor_bytes if info.tensor_bytes else 0
        rows.append((type_name, str(part["count"]), count(part["n_elements"]), size(part["bytes"]), f"{share:.0%}"))
    return rows


def model_notes(info) -> list[str]:
    """The notes under the facts: rows K-quants cannot pack, then the chat template's start."""
    notes = []
    if info.rows_not_multiple_of_256:
        notes.append(
            f"note: {info.rows_not_multiple_of_256} of {info.matrix_tensor_count} weight matrices have rows "
            "that are not a multiple of 256; K-quants (Q4_K_M ...) fall back to other types on them"
        )
    template = info.chat_template
    if template is None:
        notes.append("chat template: none in this file")
    else:
        more = f"... ({len(template)} characters)" if len(template) > TEMPLATE_SHOWN else ""
        notes.append(f"chat template:\n{template[:TEMPLATE_SHOWN]}{more}")
    return notes
