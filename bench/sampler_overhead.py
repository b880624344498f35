"""Overhead of Variance-Aware Sampling per GRPO generation round, as a fraction of the round's training step.

Baseline (measured in the same run): the forward + backward pass of one GRPO generation batch - ``--prompts``
prompts x ``--generations`` completions, ``--prompt-len + --completion-len`` tokens each - through a tiny random
``Qwen2ForCausalLM`` on CPU, in micro-batches of ``--micro-batch`` sequences, with a GRPO-style loss
``-mean(A * log pi(token))`` on the completion tokens.  No generation, reference model or optimizer step is
timed, so the baseline *under*-states a real GRPO step (generation usually dominates) and the ratio is an upper
bound.

VAS work for the same round, on a dataset of ``--dataset`` prompts (15,000 by default):
- ``draw``: the sampler producing the next chunk of ``--prompts`` unique indices (``VASSampler.iter_chunks`` with
  ``refresh_every=1``, i.e. re-reading P from the table every round - the most expensive setting) including
  the O(N) re-normalisation of the weights after each table update;
- ``update``: ``VPSTable.update_from_flat`` of the round's gathered rewards and completion texts - pass rates
  and the TDS (edit distance on words, curation.score.scores) of every group - with real texts: GSM8K model
  solutions from ../shared/data/gsm8k/example_model_solutions.jsonl, repeated to ``--completion-len`` words.
- ``epoch_start``: the once-per-epoch work (RepeatSampler's permutation + first snapshot), amortised over the
  epoch's rounds.

Prints the medians and ``overhead = (draw + update + epoch_start / rounds_per_epoch) / step``; target < 1%.
Usage: ``python bench/sampler_overhead.py [--dataset 15000] [--prompts 16] [--generations 8]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from training.sampler import VASSampler
from training.vps import VPSConfig, VPSTable

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
MODELS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


def tiny_qwen2(vocab: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        vocab_size=vocab, hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    return Qwen2ForCausalLM(cfg)


def grpo_step(model, ids: torch.Tensor, prompt_len: int, adv: torch.Tensor, micro: int) -> tuple[float, float]:
    """Forward + backward of the whole generation batch; returns (wall seconds, process CPU seconds)."""
    model.zero_grad(set_to_none=True)
    t0, c0 = time.perf_counter(), time.process_time()
    for s in range(0, ids.shape[0], micro):
        x = ids[s : s + micro]
        logits = model(input_ids=x).logits[:, prompt_len - 1 : -1]
        logp = torch.log_softmax(logits.float(), -1).gather(-1, x[:, prompt_len:, None]).squeeze(-1)
        loss = -(adv[s : s + micro, None] * logp).mean() * x.shape[0] / ids.shape[0]
        loss.backward()
    return time.perf_counter() - t0, time.process_time() - c0


def real_texts(min_words: int) -> list[list[str]]:
    """Groups of 4 real solutions per GSM8K test problem, each repeated up to ``min_words`` words."""
    out = []
    with open(DATA / "gsm8k/example_model_solutions.jsonl") as f:
        for line in f:
            row = json.loads(line)
            g = []
            for m in MODELS:
                w = row[m]["solution"].split()
                g.append(" ".join((w * (min_words // max(len(w), 1) + 1))[:min_words]))
            out.append(g)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", type=int, default=15000)
    ap.add_argument("--prompts", type=int, default=16, help="unique prompts per generation batch")
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--completion-len", type=int, default=192)
    ap.add_argument("--micro-batch", type=int, default=16)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=30, help="VAS rounds timed")
    ap.add_argument("--steps", type=int, default=2, help="baseline steps timed (after one warm-up)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    G, B, N = args.generations, args.prompts, args.dataset

    # --- baseline: GRPO-ish fwd+bwd of one generation batch ----------------------------------------------
    model = tiny_qwen2(args.vocab)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, args.vocab, (B * G, args.prompt_len + args.completion_len), generator=gen)
    adv = torch.randn(B * G, generator=gen)
    grpo_step(model, ids, args.prompt_len, adv, args.micro_batch)  # warm-up
    timed = [grpo_step(model, ids, args.prompt_len, adv, args.micro_batch) for _ in range(args.steps)]
    step_s = [w for w, _ in timed]
    step, step_cpu = statistics.median(step_s), statistics.median(c for _, c in timed)

    # --- VAS: dataset of N prompts with scores, sampler + online update per round -------------------------
    rng = np.random.default_rng(0)
    ids_ = [f"p{i}" for i in range(N)]
    table = VPSTable(ids_, pass_rate=rng.integers(0, 9, N) / 8, tds=rng.random(N), config=VPSConfig())
    sampler = VASSampler(N, table, mini_repeat_count=G, batch_size=B, repeat_count=1, vas_fraction=0.5, seed=0,
                         refresh_every=1)
    texts = real_texts(args.completion_len)
    table.update([ids_[0]], [[1.0, 0.0]], [["a b", "a c"]])  # warm-up (lazy import of the TDS metric)
    t0 = time.perf_counter()
    chunks = sampler.iter_chunks(epoch=0)
    first, _ = next(chunks)  # epoch start: permutation + first snapshot + first chunk
    epoch_start = time.perf_counter() - t0
    draw_s, upd_s = [], []
    c0 = time.process_time()
    idx = first
    for r in range(args.rounds):
        keys = [ids_[i] for i in idx for _ in range(G)]
        rewards = rng.integers(0, 2, B * G).astype(np.float32)
        comp = [texts[(r * B + k) % len(texts)][j % 4] for k in range(B) for j in range(G)]
        t0 = time.perf_counter()
        table.update_from_flat(keys, torch.from_numpy(rewards), comp, group_size=G)
        upd_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        idx, _ = next(chunks)
        draw_s.append(time.perf_counter() - t0)
    vas_cpu = (time.process_time() - c0) / args.rounds  # mean CPU seconds per round (draw + update)
    draw, upd = statistics.median(draw_s), statistics.median(upd_s)
    rounds_per_epoch = N // B
    vas = draw + upd + epoch_start / rounds_per_epoch
    print(f"tiny Qwen2 fwd+bwd of one generation batch ({B} prompts x {G} completions, "
          f"{args.prompt_len}+{args.completion_len} tokens, vocab {args.vocab}): {step * 1e3:9.1f} ms (median of "
          f"{args.steps}: {', '.join(f'{s * 1e3:.0f}' for s in step_s)})")
    print(f"VAS draw of the next chunk from {N} prompts (refresh every round): {draw * 1e3:9.3f} ms")
    print(f"VPS update ({B} groups x {G} rollouts, edit-distance TDS on {args.completion_len}-word texts): "
          f"{upd * 1e3:9.3f} ms")
    print(f"epoch start (permutation + snapshot), per round amortised over {rounds_per_epoch}: "
          f"{epoch_start * 1e3:.2f} ms -> {epoch_start / rounds_per_epoch * 1e3:.4f} ms")
    ratio = vas / step
    print(f"overhead per round = {vas * 1e3:.3f} ms = {ratio * 100:.3f}% of the step (target < 1%): "
          f"{'OK' if ratio < 0.01 else 'ABOVE TARGET'}")
    print(f"CPU time: step {step_cpu * 1e3:.1f} ms ({args.threads} threads), VAS {vas_cpu * 1e3:.3f} ms per round "
          f"-> {vas_cpu / step_cpu * 100:.3f}% (less sensitive to other processes on a shared machine)")


if __name__ == "__main__":
    main()
