"""A stand-in for the ``vllm`` package (test-only) for the worker-subprocess protocol of
:class:`curation.engines.vllm.VLLMEngine`: put ``tests/fake_vllm`` on the worker's ``PYTHONPATH`` and run the
worker on the main interpreter.  Real vLLM cannot start several engines quickly on the test machine; this one
starts in seconds, records what it was given and can be told to wait, which makes scheduling observable.

``LLM(model, **kwargs)`` loads the model's real tokenizer (chat template rendering stays real) and writes
``$FAKE_VLLM_DIR/start-<pid>.json`` (the keyword arguments and ``CUDA_VISIBLE_DEVICES``).  Completions are a
deterministic function of (prompt text, request seed, sample index): ``"The answer is <k>."``.

Steering, from the environment the worker was started with:

* ``FAKE_VLLM_BARRIER=k``: ``LLM()`` returns only once ``k`` engines have been started (their start files
  exist); after ``FAKE_VLLM_TIMEOUT`` seconds (default 20) it raises: engines started one after another
  never get there.
* ``FAKE_VLLM_HOLD=TOKEN:RELEASE[,TOKEN:RELEASE]``: the first ``generate`` call whose prompts contain
  ``TOKEN`` waits until an engine in *another* process has finished a call with a prompt containing
  ``RELEASE`` (raises after the timeout).  Every call writes ``$FAKE_VLLM_DIR/gen-<pid>-<i>.json`` (its
  prompts) when it finishes.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from types import SimpleNamespace

__version__ = "0.0.0+fake"


def _dir() -> str:
    d = os.environ["FAKE_VLLM_DIR"]
    os.makedirs(d, exist_ok=True)
    return d


def _timeout() -> float:
    return float(os.environ.get("FAKE_VLLM_TIMEOUT", "20"))


def _wait(cond, what: str) -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > _timeout():
            raise RuntimeError(f"fake vllm: timed out waiting for {what}")
        time.sleep(0.05)


class SamplingParams:
    def __init__(self, n: int = 1, temperature: float = 1.0, top_p: float = 1.0, max_tokens: int = 16,
                 seed: int | None = None, stop=None, skip_special_tokens: bool = True):
        self.n, self.temperature, self.top_p, self.max_tokens = n, temperature, top_p, max_tokens
        self.seed, self.stop = seed, stop


class LLM:
    def __init__(self, model: str, **kwargs):
        from transformers import AutoTokenizer

        self.model = model
        self._tok = AutoTokenizer.from_pretrained(model)
        self._calls = 0
        d = _dir()
        record = {"model": model, "pid": os.getpid(), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                  **{k: v for k, v in kwargs.items() if isinstance(v, (str, int, float, bool, dict, list, type(None)))}}
        with open(os.path.join(d, f"start-{os.getpid()}.json"), "w") as f:
            json.dump(record, f)
        k = int(os.environ.get("FAKE_VLLM_BARRIER", "0"))
        if k:
            _wait(lambda: sum(n.startswith("start-") for n in os.listdir(d)) >= k, f"{k} engines to start")

    def get_tokenizer(self):
        return self._tok

    def _done_elsewhere(self, text: str) -> bool:
        """Whether an engine in another process has finished a call with a prompt containing ``text``."""
        me = f"gen-{os.getpid()}-"
        for name in os.listdir(_dir()):
            if name.startswith("gen-") and not name.startswith(me):
                with open(os.path.join(_dir(), name)) as f:
                    if any(text in t for t in json.load(f)):
                        return True
        return False

    def _maybe_hold(self, texts: list[str]) -> None:
        for item in filter(None, os.environ.get("FAKE_VLLM_HOLD", "").split(",")):
            token, release = item.split(":", 1)
            marker = os.path.join(_dir(), f"held-{hashlib.sha1(token.encode()).hexdigest()[:8]}")
            if any(token in t for t in texts) and not os.path.exists(marker):
                open(marker, "w").close()
                _wait(lambda release=release: self._done_elsewhere(release),
                      f"a prompt with {release!r} done elsewhere while holding {token!r}")

    def generate(self, prompts, sampling_params=None, use_tqdm=False):
        texts = [p["prompt"] if isinstance(p, dict) else p for p in prompts]
        self._maybe_hold(texts)
        outs = []
        for text, sp in zip(texts, sampling_params):
            samples = []
            for j in range(sp.n):
                h = hashlib.blake2b(f"{text}|{sp.seed}|{j}".encode(), digest_size=8).digest()
                answer = f"The answer is {int.from_bytes(h, 'little') % 20}."
                ids = self._tok(answer, add_special_tokens=False)["input_ids"]
                cut = ids[: sp.max_tokens]
                samples.append(SimpleNamespace(index=j, text=self._tok.decode(cut), token_ids=cut,
                                               finish_reason="length" if len(ids) > sp.max_tokens else "stop"))
            outs.append(SimpleNamespace(outputs=samples))
        self._calls += 1
        tmp = os.path.join(_dir(), f".tmp-{os.getpid()}")
        with open(tmp, "w") as f:
            json.dump(texts, f)
        os.replace(tmp, os.path.join(_dir(), f"gen-{os.getpid()}-{self._calls}.json"))
        return outs
