"""``train plan --config RECIPE [KEY=VALUE ...] [--gpus N --gpu-mem GiB] [--accelerate-config YAML]``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ._shared import OVERRIDES_ARG, SET_OPT, run_guarded


def render_plan(plan: Any, *, full: bool = True) -> None:
    """Print a :class:`training.plan.RunPlan`: per-stage geometry and memory, findings, the launch line."""
    from rich.markup import escape
    from rich.table import Table

    from curation.core.console import console

    from ..memory import GIB
    from ..plan import NAMES

    L = plan.launch

    def g(x: float) -> str:
        return f"{x / GIB:.1f}"

    mem = f"{L.gpu_bytes / GIB:.1f} GiB" if L.gpu_bytes else "memory unknown"
    d = plan.dims
    def n(x: int) -> str:
        return f"{x / 1e9:.2f}B" if x >= 1e9 else f"{x / 1e6:.1f}M"

    model = (f"{d.name}: {n(d.params)} parameters" + (f" ({n(d.vision_params)} vision)" if d.vision_params else "")
             if d else "model not read")
    where = f"{L.gpus} x GPU ({mem})" if not L.cpu else f"{L.gpus} CPU process(es)"
    console.print(f"[bold]checks[/] {model}; {where}; launch: "
                  f"{NAMES.get(plan.chosen, plan.chosen)} ({L.origin}{': ' + L.config_file if L.config_file else ''})")
    if not full:
        for s in plan.stages:
            est = s.memory.get(plan.chosen)
            if est is not None:
                console.print(f"{s.label}: ~{g(est.total)} GiB per GPU (estimate)")
    if full:
        t = Table(title="stages")
        for c in ("stage", "kind", "rows", "batch", "per GPU (GiB)"):
            t.add_column(c, justify="left" if c in ("stage", "kind", "batch") else "right")
        for s in plan.stages:
            geo = s.geometry
            if s.kind == "grpo" and geo:
                batch = (f"{geo['per_device_train_batch_size']}/GPU x {geo['world_size']} x gas "
                         f"{geo['gradient_accumulation_steps']}; generation {geo['generation_batch_size']} = "
                         f"{geo['prompts_per_generation']} prompts x {geo['num_generations']}")
            elif geo:
                batch = (f"{geo['per_device_train_batch_size']}/GPU x {geo['world_size']} x gas "
                         f"{geo['gradient_accumulation_steps']} = {geo['global_batch']}")
            else:
                batch = "-"
            est = s.memory.get(plan.chosen)
            t.add_row(s.label, s.kind, "done" if s.done else ("-" if s.rows is None else f"{s.rows:,}"), batch,
                      g(est.total) if est else "-")
        console.print(t)
        if any(s.memory for s in plan.stages):
            m = Table(title=f"per-GPU memory estimate under {NAMES.get(plan.chosen, plan.chosen)} (GiB)")
            cols = ["stage", "weights", "grads", "optimizer", "reference", "buffers", "activations",
                    "act. no GC", "act. GC", "logits", "vLLM", "total"]
            for c in cols:
                m.add_column(c, justify="left" if c == "stage" else "right")
            for s in plan.stages:
                e = s.memory.get(plan.chosen)
                if e:
                    m.add_row(s.label, g(e.weights), g(e.grads), g(e.optimizer), g(e.reference), g(e.buffers),
                              g(e.activations), g(e.activations_no_gc), g(e.activations_gc), g(e.logits),
                              g(e.vllm), f"[bold]{g(e.total)}[/]")
            console.print(m)
            strategies = list(next(s for s in plan.stages if s.memory).memory)
            if len(strategies) > 1:
                c = Table(title="total per GPU by launch (GiB)")
                c.add_column("stage")
                for st in strategies:
                    c.add_column(NAMES[st], justify="right")
                for s in plan.stages:
                    if s.memory:
                        c.add_row(s.label, *(g(s.memory[st].total) for st in strategies))
                console.print(c)
        for s in plan.stages:
            if s.kv:
                k = s.kv
                console.print(
                    f"{s.label}: vLLM KV cache ~{k['kv_tokens']:,} tokens ({k['kv_bytes_per_token'] / 1024:.0f} KiB "
                    f"per token) at vllm_gpu_memory_utilization {k['share']}: {k['max_len_sequences']} sequence(s) of "
                    f"max_model_len {k['max_model_len']} at once (TRL asks for up to {k['max_num_seqs']})")
    for f in plan.all_findings():
        if f.level == "ok" and not full:
            continue
        colour = {"fail": "bold red", "warn": "yellow", "ok": "green"}[f.level]
        console.print(f"[{colour}]{f.level.upper()}[/] {escape(str(f))}")
    if plan.refused:
        console.print(f"[bold red]refused[/]: {len(plan.failures)} problem(s) above")
    elif plan.command and full:
        console.print(f"[bold green]ok[/] - launch with:\n  {escape(plan.command)}")
    else:
        console.print("[bold green]ok[/]: every stage passed its checks")


def register(app: typer.Typer) -> None:
    @app.command("plan")
    def plan_cmd(
        config: Annotated[Path, typer.Option("--config", "-c", help="Recipe YAML (staged, grpo or sft).")],
        overrides: OVERRIDES_ARG = None,
        set_: SET_OPT = None,
        gpus: Annotated[Optional[int], typer.Option("--gpus", help="GPUs (processes) of the run; default: this machine's.")] = None,
        gpu_mem: Annotated[Optional[float], typer.Option("--gpu-mem", help="Memory of one GPU in GiB; default: this machine's (nvidia-smi).")] = None,
        accelerate_config: Annotated[Optional[Path], typer.Option("--accelerate-config", help="Check this accelerate launch config (pipelines/accelerate/*.yaml); default: estimate DDP, ZeRO-2, ZeRO-3 and recommend one.")] = None,
        prompt_tokens: Annotated[Optional[int], typer.Option("--prompt-tokens", help="GRPO prompt length budget when vllm_max_model_length does not bound it (default 1024).")] = None,
        kind: Annotated[Optional[str], typer.Option("--kind", help="staged | grpo | sft: which part of the recipe (default: staged, else grpo, else sft).")] = None,
    ) -> None:
        """Check every stage before anything trains - imports, data sizes against the generation batch, TRL's
        batch rules, launcher/recipe agreement, vLLM context and KV cache - and estimate per-GPU memory
        (weights, gradients, optimizer, reference model, activations with and without gradient
        checkpointing, logits, vLLM share). Exit code 1 when the run would be refused."""
        from ..config import load_raw
        from ..memory import GIB
        from ..plan import detect_gpu_memory, launch_from_accelerate_config, plan_recipe

        ov = [*(overrides or []), *(set_ or [])]

        def build():
            raw = load_raw(config, ov)
            n, mem = detect_gpu_memory()
            mem_bytes = gpu_mem * GIB if gpu_mem else mem
            n_gpus = gpus or (n or 1)
            launch = (launch_from_accelerate_config(accelerate_config, gpus=n_gpus, gpu_bytes=mem_bytes)
                      if accelerate_config else None)
            return plan_recipe(raw, launch=launch, gpus=n_gpus, gpu_bytes=mem_bytes, prompt_tokens=prompt_tokens,
                               kind=kind, recipe_path=str(config), overrides=ov)

        plan = run_guarded(build)
        render_plan(plan)
        if plan.refused:
            raise typer.Exit(1)
