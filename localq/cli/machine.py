"""The commands about this machine: ``probe`` (what it is) and ``recommend`` (what runs on it, and why)."""

from __future__ import annotations

import click

from localq.cli.group import cli
from localq.cli.render import print_json, print_profile, print_recommendation, print_suggestions
from localq.defaults import DEFAULT_CONTEXT
from localq.errors import LocalqError


@cli.command("probe")
@click.option("--json", "as_json", is_flag=True, help="Print the hardware profile as JSON.")
@click.option("--remeasure", is_flag=True, help="Measure the memory bandwidth again instead of reusing it.")
def probe_command(as_json: bool, remeasure: bool) -> None:
    """Show this machine: CPU, memory, GPUs, bandwidth and the backends that can run."""
    from localq.machine import machine_profile

    profile = machine_profile(remeasure=remeasure)
    if as_json:
        print_json(profile.to_dict())
        return
    print_profile(profile)


@cli.command("recommend")
@click.argument("model", required=False)
@click.option("--ctx", type=int, default=None, help=f"Context length in tokens (default {DEFAULT_CONTEXT}, or the model's if shorter).")
@click.option("--prefer", type=click.Choice(["quality", "balanced", "speed"]), default="balanced",
              show_default=True, help="What to favour among the plans that fit.")
@click.option("--json", "as_json", is_flag=True, help="Print the recommendation and every plan as JSON.")
def recommend_command(model: str | None, ctx: int | None, prefer: str, as_json: bool) -> None:
    """Say which backend and quant to run MODEL with here, and why.

    MODEL is a catalog model (llama3.1:8b; a quant in the tag, as in
    llama3.1:8b-q8_0, checks that one quant) or a GGUF file's path. Without
    MODEL, the catalog models worth pulling here: the largest that fit and run
    at a comfortable speed.
    """
    import math

    if model is None:
        from localq.machine import machine_profile
        from localq.recommend.suggest import suggested_pulls

        from localq.calibration import local_speeds_for

        profile = machine_profile()
        return print_suggestions(suggested_pulls(profile, context=ctx, prefer=prefer,
                                                 speeds_for=local_speeds_for(profile)), as_json)

    from localq.names import expand_path, parse
    from localq.machine import machine_profile
    from localq.recommend import ACCEPTABLE_PPL_DELTA, ModelSpec, find_model, recommend

    ref = parse(model)
    quants, floor = None, ACCEPTABLE_PPL_DELTA
    if ref.kind == "path":
        from localq.gguf_info import read_gguf_info

        spec = ModelSpec.from_gguf_info(read_gguf_info(expand_path(ref)))
        quants = list(spec.file_sizes) or None
    elif ref.kind == "catalog":
        spec = ModelSpec.from_catalog(find_model(ref.model))
        if ref.quant:  # the user named it: check that one, whatever its quality
            quants, floor = [ref.quant], math.inf
    else:
        raise LocalqError(f"recommend needs a catalog model or a GGUF file, not the Hub repository {model!r}",
                          "use a catalog name such as llama3.1:8b (see `localq catalog`)")
    measured = None
    if ref.kind == "catalog":
        from localq.cli.common import open_db
        from localq.store.evaluations import measured_deltas

        measured = measured_deltas(open_db(), ref.model) or None  # localq eval's figures beat the tables
    from localq.calibration import local_speeds

    profile = machine_profile()
    speeds = local_speeds(profile, spec.name)
    rec = recommend(profile, spec, ctx, prefer, measured=measured, quants=quants, floor=floor, speeds=speeds)
    if as_json:
        print_json(rec.to_dict())
        return
    print_recommendation(rec)
