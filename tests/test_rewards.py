"""Reward functions: accuracy (real GSM8K / MATH-Vision responses, conversational and multimodal rows),
format, efficient length (clipping edges), repetition penalty, combination and the recipe registry."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import yaml

from training.rewards import (
    REWARDS,
    accuracy_reward,
    build_reward_funcs,
    combine_rewards,
    completion_text,
    format_reward,
    make_accuracy_reward,
    make_format_reward,
    make_length_reward,
    make_repetition_penalty_reward,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _conv(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def _parts(text: str) -> list[dict]:
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


class _Log:
    """Collects what a reward sends to TRL's ``log_extra`` / ``log_metric`` hooks."""

    def __init__(self):
        self.extra: dict[str, list] = {}
        self.metrics: dict[str, float] = {}

    def log_extra(self, column, values):
        self.extra[column] = list(values)

    def log_metric(self, name, value):
        self.metrics[name] = value


# -- completions -------------------------------------------------------------------------------------------


def test_completion_text_forms():
    assert completion_text("abc") == "abc"
    assert completion_text(_conv("abc")) == "abc"
    parts = [{"role": "assistant", "content": [{"type": "image"}, {"type": "text", "text": "a"},
                                                {"type": "text", "text": "b"}]}]
    assert completion_text(parts) == "ab"
    assert completion_text(None) == ""


# -- accuracy ----------------------------------------------------------------------------------------------


def test_accuracy_on_real_gsm8k_solutions():
    rows = [json.loads(line) for line in (DATA / "gsm8k" / "example_model_solutions.jsonl").open()][:40]
    completions, answers, labels = [], [], []
    for r in rows:
        gold = r["ground_truth"].rsplit("A:", 1)[1].strip()
        for key in ("6b_finetuning", "175b_verification"):
            completions.append(r[key]["solution"])
            answers.append(gold)
            labels.append(1.0 if r[key]["is_correct"] else 0.0)
    log = _Log()
    got = accuracy_reward(completions, answer=answers, log_extra=log.log_extra, log_metric=log.log_metric)
    assert got == labels
    assert 0 < sum(got) < len(got)
    # conversational form gives the same rewards
    assert accuracy_reward([_conv(c) for c in completions], answer=answers) == labels
    assert len(log.extra["extracted_answer"]) == len(completions)
    assert set(log.extra["verdict"]) <= {"correct", "incorrect", "no_answer"}
    assert "accuracy/timeout_frac" in log.metrics


def test_accuracy_on_multimodal_math_vision_rows():
    from PIL import Image

    problems = {r["id"]: r for r in map(json.loads, (DATA / "math_vision" / "testmini.jsonl").open())}
    outputs = [json.loads(line) for line in (DATA / "math_vision" / "model_outputs.jsonl").open()]
    picked = [o for o in outputs if o["model"] == "InternLM-XComposer2-VL"][:30]
    answers = [problems[o["id"]]["answer"] for o in picked]
    options = [problems[o["id"]]["options"] for o in picked]
    images = []
    for o in picked[:3]:
        with Image.open(DATA / "math_vision" / problems[o["id"]]["image"]) as im:
            images.append([im.copy()])
    images += [[]] * (len(picked) - 3)
    prompts = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": problems[o["id"]]["question"]}]}]
               for o in picked]
    got = accuracy_reward([_parts(o["response"]) for o in picked], prompts=prompts, answer=answers,
                          options=options, images=images, completion_ids=[[1, 2]] * len(picked),
                          trainer_state=None)
    expected = [1.0 if o["correct"] else 0.0 for o in picked]
    # one external label is wrong: problem 53, gold A, response "The answer is \textbf{A}." was graded
    # incorrect because the original grader extracted "bfa"
    assert picked[28]["response"] == "The answer is \\textbf{A}." and answers[28] == "A"
    expected[28] = 1.0
    assert got == expected


def test_accuracy_none_when_gold_cannot_be_checked():
    completions = ["\\boxed{4}", "\\boxed{4}", "\\boxed{4}", "no idea", "<think>x</think> \\boxed{C}",
                   "<think>x</think> \\boxed{4}", "\\boxed{E}"]
    answers = ["4", "", "Proof: left to the reader.", "4", "C", "B", "E"]
    options = [None, None, None, None, ["1", "2", "4"], ["1", "2", "4"], ["1", "2", "4"]]
    assert accuracy_reward(completions, answer=answers, options=options) == [1.0, None, None, 0.0, 1.0, 0.0, None]


def test_accuracy_from_solution_column_and_errors():
    sols = ["We get $x = 3$, so $\\boxed{3}$.", "Hence the answer is $\\boxed{\\frac{1}{2}}$."]
    assert accuracy_reward(["#### 3", "\\boxed{0.5}"], solution=sols) == [1.0, 1.0]
    with pytest.raises(ValueError, match="answer"):
        accuracy_reward(["1"], prompts=["q"])
    with pytest.raises(ValueError, match="2 values for 1"):
        accuracy_reward(["1"], answer=["1", "2"])
    strict = make_accuracy_reward(rules=["boxed"])
    assert strict(["The answer is 3.", "\\boxed{3}"], answer=["3", "3"]) == [0.0, 1.0]


# -- format ------------------------------------------------------------------------------------------------

GOOD = "<think>\n16 - 3 - 4 = 9 eggs, 9 * 2 = 18.\n</think>\nShe makes $\\boxed{18}$ dollars."


@pytest.mark.parametrize(
    "text",
    [
        "16 - 3 - 4 = 9, so \\boxed{18}",  # no think block
        "<think>16 - 3 - 4 = 9 so \\boxed{18}",  # think never closed
        "<think>9 * 2 = 18</think> She makes 18 dollars.",  # no boxed answer after the think block
        "<think>so \\boxed{18}</think> The answer is 18.",  # boxed only inside the reasoning
        "<think>  </think> \\boxed{18}",  # empty reasoning
        "<think>a</think><think>b</think> \\boxed{18}",  # two think blocks
        "<think>a</think> \\boxed{18} </think>",  # a stray closing tag
        "<think>a</think> \\boxed{}",  # empty box
        "<think>a</think> \\boxed{18",  # unbalanced box
        "Sure! <think>a</think> \\boxed{18}",  # text before the think block
        "",
    ],
)
def test_format_negative(text):
    assert format_reward([text]) == [0.0]


def test_format_positive_and_custom():
    assert format_reward([GOOD, _conv(GOOD), _parts("  " + GOOD)]) == [1.0, 1.0, 1.0]
    r1 = make_format_reward(think_tags=("<reasoning>", "</reasoning>"), answer_pattern=r"<answer>.+?</answer>\s*$")
    assert r1(["<reasoning>9*2</reasoning><answer>18</answer>"]) == [1.0]
    assert r1(["<reasoning>9*2</reasoning><answer>18</answer> extra"]) == [0.0]
    assert r1([GOOD]) == [0.0]
    no_open = make_format_reward(require_open=False)  # templates that put <think> into the prompt
    assert no_open(["16 - 3 - 4 = 9\n</think>\n\\boxed{18}", GOOD, "no tags \\boxed{18}"]) == [1.0, 1.0, 0.0]
    with pytest.raises(ValueError):
        make_format_reward(think_tags=("<think>",))


# -- efficient length --------------------------------------------------------------------------------------


def test_length_reward_formula_and_clipping_edges():
    r = make_length_reward(budget=200)  # alpha 0.005, delta 0.5
    ids = [[0] * n for n in (0, 99, 100, 101, 150, 199, 200, 201, 250, 299, 300, 301, 10_000)]
    got = r(["x"] * len(ids), completion_ids=ids)
    expected = [min(1.0, max(0.0, 0.005 * (200 - len(x)) + 0.5)) for x in ids]
    assert got == pytest.approx(expected)
    assert got[1] == 1.0 and got[2] == 1.0  # 100 under the budget: exactly 1, and clipped below that
    assert got[0] == 1.0
    assert got[10] == 0.0 and got[11] == 0.0 and got[12] == 0.0  # 100 over: exactly 0, and clipped beyond
    assert got[6] == 0.5  # at the budget: delta
    assert got[3] == pytest.approx(0.995) and got[9] == pytest.approx(0.005)
    assert 0.0 < min(got[3:10]) and max(got[3:10]) < 1.0
    custom = make_length_reward(budget=10, alpha=0.1, delta=0.2)
    assert custom(["a"], completion_ids=[[0] * 8]) == [pytest.approx(0.4)]
    with pytest.raises(ValueError):
        make_length_reward(budget=0)


def test_length_reward_token_sources():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # splits punctuation: "18." is two tokens
    tok.train_from_iterator(["she makes 18 dollars every day ."], trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    text = "she makes 18. dollars, every day."
    n_tok = len(hf_tok.encode(text, add_special_tokens=False))
    n_words = len(text.split())
    assert n_tok == 9 and n_words == 6
    budget = 10
    with_tok = make_length_reward(budget=budget, alpha=0.1, delta=0.0, tokenizer=hf_tok)
    words = make_length_reward(budget=budget, alpha=0.1, delta=0.0)
    assert with_tok([text]) == [pytest.approx(0.1 * (budget - n_tok))]
    assert with_tok([_conv(text)]) == [pytest.approx(0.1 * (budget - n_tok))]
    assert words([text]) == [pytest.approx(0.1 * (budget - n_words))]
    # completion_ids win over both
    assert with_tok([text], completion_ids=[[1] * 5]) == [pytest.approx(0.5)]
    assert make_length_reward(budget=10, tokenizer=tok)([text]) == [pytest.approx(0.005 + 0.5)]


# -- repetition --------------------------------------------------------------------------------------------


def test_repetition_penalty_open_r1_values():
    r = make_repetition_penalty_reward(ngram_size=3, max_penalty=-1.0)
    text = "the cat sat on the mat"
    assert r([text]) == [0.0]  # 4 trigrams, all unique
    loop = "we add one . " * 10  # 40 words, 38 trigrams, 4 unique
    assert r([loop]) == [pytest.approx(-(1 - 4 / 38))]
    assert r(["The the THE the"]) == [pytest.approx(-(1 - 1 / 2))]  # lower-cased words
    assert r(["two words", ""]) == [0.0, 0.0]  # shorter than the n-gram
    half = make_repetition_penalty_reward(ngram_size=2, max_penalty=-0.5, unit="tokens")
    assert half(["ignored", "ignored"], completion_ids=[[1, 2, 3, 4], [5, 5, 5, 5, 5]]) == [0.0, pytest.approx(-0.375)]
    assert half(["a b a b"]) == [pytest.approx(-0.5 * (1 - 2 / 3))]  # no ids: falls back to words
    with pytest.raises(ValueError):
        make_repetition_penalty_reward(max_penalty=0.5)


# -- combination and registry ------------------------------------------------------------------------------


def test_combine_rewards_weights_and_none():
    length = make_length_reward(budget=100)
    combined = combine_rewards([(accuracy_reward, 1.0), (format_reward, 0.5), (length, 0.25)])
    completions = [GOOD, "\\boxed{17}", "no answer here\n..."]
    ids = [[0] * 100, [0] * 200, [0] * 0]
    got = combined(completions, answer=["18", "", "18"], completion_ids=ids)
    assert got[0] == pytest.approx(1.0 + 0.5 + 0.25 * 0.5)
    assert got[1] == pytest.approx(0.0 + 0.25 * 0.0)  # accuracy None (empty gold) is left out
    assert got[2] == pytest.approx(0.0 + 0.0 + 0.25 * 1.0)
    only_none = combine_rewards([(accuracy_reward, 1.0)])
    assert only_none(["\\boxed{1}"], answer=[""]) == [None]
    assert combined.__name__ == "combined_reward"


def test_build_reward_funcs_from_yaml():
    spec = yaml.safe_load("rewards: {accuracy: 1.0, format: {weight: 0.5}, length: {weight: 0.5, budget: 1024},"
                          " repetition: {weight: 0.1, ngram_size: 4}}")["rewards"]
    funcs, weights = build_reward_funcs(spec)
    assert [f.__name__ for f in funcs] == ["accuracy_reward", "format_reward", "length_reward",
                                           "repetition_penalty_reward"]
    assert weights == [1.0, 0.5, 0.5, 0.1]
    assert funcs[2].budget == 1024 and funcs[3].ngram_size == 4
    assert set(REWARDS) == {"accuracy", "format", "length", "repetition"}
    for f in funcs:  # TRL's async rollout workers pickle reward functions
        assert pickle.loads(pickle.dumps(f)).__name__ == f.__name__
    with pytest.raises(ValueError, match="unknown reward 'speed'"):
        build_reward_funcs({"speed": 1.0})
    with pytest.raises(ValueError, match="rewards.length"):
        build_reward_funcs({"length": 0.5})  # budget is required
    with pytest.raises(ValueError, match="allowed options"):
        build_reward_funcs({"format": {"weight": 1, "tags": ["a", "b"]}})
    with pytest.raises(ValueError, match="weight"):
        build_reward_funcs({"accuracy": {"weight": "high"}})
    with pytest.raises(ValueError):
        build_reward_funcs({})


def test_trl_grpo_config_accepts_the_weights():
    from trl import GRPOConfig

    funcs, weights = build_reward_funcs({"accuracy": 1.0, "format": {"weight": 0.5}})
    cfg = GRPOConfig(output_dir="/tmp/unused-grpo", reward_weights=weights, report_to=[], use_cpu=True, bf16=False)
    assert list(cfg.reward_weights) == [1.0, 0.5]


def test_accuracy_lenient_rule_from_the_recipe():
    """The lenient ``last_math`` extraction is off by default (no final-answer marker = no reward) and is
    switched on per recipe: ``rewards: {accuracy: {weight: 1.0, lenient: true}}``."""
    completions = ["<think>4 + 1 = 5</think> Therefore $x \\geq 5$ is the solution.", "so \\boxed{x \\ge 5}"]
    answers = ["x \\geq 5", "x \\geq 5"]
    assert accuracy_reward(completions, answer=answers) == [0.0, 1.0]
    spec = yaml.safe_load("rewards: {accuracy: {weight: 1.0, lenient: true}}")["rewards"]
    (lenient,), weights = build_reward_funcs(spec)
    assert weights == [1.0] and lenient.lenient
    assert lenient(completions, answer=answers) == [1.0, 1.0]
    assert pickle.loads(pickle.dumps(lenient)).lenient
    assert make_accuracy_reward(lenient=True, rules=["boxed"]).rules == ("boxed", "last_math")
